// Tests for cgroup-ns.ts: a path the kernel wrote relative to brokerd's cgroup namespace, back in
// the terms of a mount of the host's tree.
import assert from "node:assert/strict";
import { test } from "node:test";
import { inHostTerms, levelsAbove } from "./cgroup-ns.js";

test("how far above brokerd's namespace root a mount's root is", () => {
  assert.equal(levelsAbove("/.."), 1);
  assert.equal(levelsAbove("/../../.."), 3);
  assert.equal(levelsAbove("/"), undefined, "the namespace root itself: nothing above it shown");
  assert.equal(levelsAbove("/../kubepods.slice"), undefined, "a sibling subtree, not an ancestor");
  assert.equal(levelsAbove("/..."), undefined);
});

test("paths in the host mount's terms, never above it", () => {
  const ns = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podb.slice/cri-containerd-b.scope";
  assert.equal(
    inHostTerms(
      "/../../../kubepods-besteffort.slice/kubepods-besteffort-poda.slice/cri-containerd-a.scope",
      ns,
    ),
    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda.slice/cri-containerd-a.scope",
  );
  assert.equal(inHostTerms("/", ns), ns, "brokerd's own namespace root");
  assert.equal(inHostTerms("/sub", ns), `${ns}/sub`, "below it");
  assert.equal(inHostTerms("/../../../../../x", ns), undefined, "above the mount's root");
  assert.equal(inHostTerms("/./x", ns), undefined, "never the kernel's");
  assert.equal(inHostTerms("x", ns), undefined);
});
