// containerOf on the cgroup shapes real engines produce, and quotaKeys built from it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { containerOf, quotaKeys } from "./container.js";

const ID = "4f3c2b1a".repeat(8);

test("containerOf: systemd and cgroupfs drivers of docker, podman, containerd and CRI-O", () => {
  const cases: [string, string | undefined][] = [
    [`/system.slice/docker-${ID}.scope`, "docker"],
    [`/docker/${ID}`, "docker"],
    [`/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container`, "podman"],
    [`/machine.slice/libpod-${ID}.scope`, "podman"],
    [
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-${ID}.scope`,
      "containerd",
    ],
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab_cd.slice/crio-${ID}.scope`, "cri-o"],
    [`/kubepods/besteffort/pod0c4f2a9e-1111-2222-3333-444455556666/${ID}`, "kubepods"],
    ["/user.slice/user-1000.slice/session-3.scope", undefined],
    ["/", undefined],
    ["", undefined],
    ["/system.slice/docker-notahexid.scope", undefined],
  ];
  for (const [path, runtime] of cases) {
    const c = containerOf(path);
    assert.equal(c?.runtime, runtime, path);
    if (runtime) assert.equal(c!.id, ID, path);
  }
});

test("quotaKeys: the uid always, the container when there is one", () => {
  assert.deepEqual(quotaKeys({ uid: 1000, cgroup: "/user.slice/user-1000.slice/session-3.scope" }), [
    "uid:1000",
  ]);
  assert.deepEqual(quotaKeys({ uid: 100999, cgroup: `/machine.slice/libpod-${ID}.scope` }), [
    "uid:100999",
    `container:${ID}`,
  ]);
});
