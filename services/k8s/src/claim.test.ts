// Tests for claim.ts (pure): what a ResourceClaim object allocates on this node, and every way
// it can fail to (each a per-claim error message), including the bounds on results and pods.
import assert from "node:assert/strict";
import { test } from "node:test";
import { readClaim } from "./claim.js";

const ref = { namespace: "ns", name: "c", uid: "11111111-2222-4333-8444-555555555555" };
const pod = "99999999-8888-4777-8666-555555555555";
const devices = new Map([
  ["sim0", "sim0"],
  ["pci-0000-3b-00-0", "0000:3b:00.0"],
]);

function claim(results: object[], reservedFor: object[] = [{ resource: "pods", name: "p", uid: pod }]) {
  return { metadata: { ...ref }, status: { allocation: { devices: { results } }, reservedFor } };
}
const r = (device: string, pool = "node", driver = "vfio-broker.io") => ({
  request: "bar",
  driver,
  pool,
  device,
});

test("results for this driver in this node's pool map to brokerd ids; other drivers' results are left out", () => {
  const out = readClaim(
    ref,
    claim([r("pci-0000-3b-00-0"), r("gpu0", "node", "gpu.example.com")]),
    "node",
    devices,
  );
  assert.deepEqual(out, {
    ok: {
      ...ref,
      podUids: [pod],
      devices: [{ request: "bar", pool: "node", device: "pci-0000-3b-00-0", brokerId: "0000:3b:00.0" }],
    },
  });
});

test("per-claim errors: another uid, not allocated, foreign pool, unknown device, no pod, malformed", () => {
  const err = (doc: unknown) =>
    "error" in readClaim(ref, doc, "node", devices)
      ? (readClaim(ref, doc, "node", devices) as { error: string }).error
      : "";
  assert.match(err({ metadata: { uid: "x" } }), /has uid x/);
  assert.match(err(null), /has uid undefined/);
  assert.match(err({ metadata: { uid: ref.uid } }), /is not allocated/);
  assert.match(err(claim([r("sim0", "other")])), /pool other, which this node \(pool node\) does not have/);
  assert.match(err(claim([r("sim7")])), /device sim7/);
  assert.match(err(claim([r("sim0")], [])), /reserved for no pod/);
  assert.match(err(claim([r("sim0")], [{ resource: "pods", uid: "not-a-uuid" }])), /not a UUID/);
  assert.match(err(claim([{ driver: "vfio-broker.io", pool: "node", device: 7 }])), /malformed/);
});

test("bounds: at most 32 devices and 256 pods per claim", () => {
  const many = Array.from({ length: 33 }, () => r("sim0"));
  assert.match((readClaim(ref, claim(many), "node", devices) as { error: string }).error, /at most 32/);
  const pods = Array.from({ length: 257 }, () => ({ resource: "pods", uid: pod }));
  assert.match(
    (readClaim(ref, claim([r("sim0")], pods), "node", devices) as { error: string }).error,
    /more than 256 pods/,
  );
});
