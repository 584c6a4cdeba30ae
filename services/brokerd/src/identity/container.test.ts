// containerOf on the cgroup shapes real engines produce, and quotaKeys built from it; an untrusted
// path (cgroup-trust.ts refused it) names nothing; namedDepth says how deep the parse reads.
import assert from "node:assert/strict";
import { test } from "node:test";
import { cgroupIdentityOf, containerOf, namedDepth, parseCgroup, quotaKeys } from "./container.js";

/** A path cgroup-trust.ts passed. */
const trusted = (cgroup: string) => ({ cgroup, cgroupTrusted: true });

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
    const c = containerOf(trusted(path));
    assert.equal(c?.runtime, runtime, path);
    if (runtime) assert.equal(c!.id, ID, path);
  }
});

test("quotaKeys: the uid always, the container when there is one", () => {
  assert.deepEqual(
    quotaKeys({ uid: 1000, cgroup: "/user.slice/user-1000.slice/session-3.scope", cgroupTrusted: true }),
    ["uid:1000"],
  );
  assert.deepEqual(
    quotaKeys({ uid: 100999, cgroup: `/machine.slice/libpod-${ID}.scope`, cgroupTrusted: true }),
    ["uid:100999", `container:${ID}`],
  );
});

const ID2 = "a1b2c3d4".repeat(8);
const POD = "0c4f2a9e-1111-2222-3333-444455556666";
const POD_ = POD.replaceAll("-", "_");

test("parseCgroup: Kubernetes pod UID and QoS class, systemd and cgroupfs drivers", () => {
  const cases: [string, ReturnType<typeof parseCgroup>][] = [
    // systemd driver (kubelet --cgroup-driver=systemd), containerd and CRI-O
    [
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`,
      { containerId: ID, containerRuntime: "containerd", podUid: POD, qosClass: "besteffort" },
    ],
    [
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice/crio-${ID}.scope`,
      { containerId: ID, containerRuntime: "cri-o", podUid: POD, qosClass: "burstable" },
    ],
    [
      `/kubepods.slice/kubepods-pod${POD_}.slice/cri-containerd-${ID}.scope`,
      { containerId: ID, containerRuntime: "containerd", podUid: POD, qosClass: "guaranteed" },
    ],
    // cgroupfs driver: containerd writes the bare id, CRI-O "crio-<id>", podman "libpod-<id>"
    [
      `/kubepods/besteffort/pod${POD}/${ID}`,
      { containerId: ID, containerRuntime: "kubepods", podUid: POD, qosClass: "besteffort" },
    ],
    [
      `/kubepods/burstable/pod${POD}/crio-${ID}`,
      { containerId: ID, containerRuntime: "cri-o", podUid: POD, qosClass: "burstable" },
    ],
    [
      `/kubepods/pod${POD}/${ID}`,
      { containerId: ID, containerRuntime: "kubepods", podUid: POD, qosClass: "guaranteed" },
    ],
    [
      `/kubepods/besteffort/pod${POD}/libpod-${ID}`,
      { containerId: ID, containerRuntime: "podman", podUid: POD, qosClass: "besteffort" },
    ],
    // static pods: the UID is a 32-hex hash
    [
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${"e".repeat(32)}.slice/cri-containerd-${ID}.scope`,
      { containerId: ID, containerRuntime: "containerd", podUid: "e".repeat(32), qosClass: "burstable" },
    ],
    // the pod's own cgroup (no container), and CRI-O's conmon: the pod without a container
    [
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice`,
      { podUid: POD, qosClass: "besteffort" },
    ],
    [
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice/crio-conmon-${ID}.scope`,
      { podUid: POD, qosClass: "besteffort" },
    ],
    [`/kubepods/burstable/pod${POD}/crio-conmon-${ID}`, { podUid: POD, qosClass: "burstable" }],
    // nested sub-cgroups inside the container
    [
      `/kubepods.slice/kubepods-pod${POD_}.slice/cri-containerd-${ID}.scope/container`,
      { containerId: ID, containerRuntime: "containerd", podUid: POD, qosClass: "guaranteed" },
    ],
    [
      `/kubepods/besteffort/pod${POD}/${ID}/app/worker`,
      { containerId: ID, containerRuntime: "kubepods", podUid: POD, qosClass: "besteffort" },
    ],
    // not Kubernetes shapes: no pod
    [`/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod${POD_}.slice`, {}],
    [`/kubepods/besteffort/pod-not-a-uid/${ID}`, {}],
    [`/kubepods/besteffort/${ID}`, {}],
    [`/system.slice/kubepods-pod${POD_}.slice`, {}],
    [`/user.slice/${ID}`, {}],
  ];
  for (const [path, want] of cases) assert.deepEqual(parseCgroup(path), want, path);
});

test("parseCgroup: docker, podman (rootful, rootless, cgroupfs) and their monitors", () => {
  const cases: [string, ReturnType<typeof parseCgroup>][] = [
    [`/system.slice/docker-${ID}.scope`, { containerId: ID, containerRuntime: "docker" }],
    [`/docker/${ID}`, { containerId: ID, containerRuntime: "docker" }],
    [`/docker/${ID}/init.scope`, { containerId: ID, containerRuntime: "docker" }],
    [`/machine.slice/libpod-${ID}.scope`, { containerId: ID, containerRuntime: "podman" }],
    [`/machine.slice/libpod-${ID}.scope/container`, { containerId: ID, containerRuntime: "podman" }],
    [
      `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container`,
      { containerId: ID, containerRuntime: "podman" },
    ],
    [
      `/user.slice/user-1000.slice/user@1000.service/app.slice/docker-${ID}.scope`,
      { containerId: ID, containerRuntime: "docker" },
    ],
    [`/libpod_parent/libpod-${ID}`, { containerId: ID, containerRuntime: "podman" }],
    [`/machine.slice/libpod-conmon-${ID}.scope`, {}],
    [`/system.slice/crio-conmon-${ID}.scope`, {}],
    [`/system.slice/crio-${ID}.scope`, { containerId: ID, containerRuntime: "cri-o" }],
    [`/system.slice/docker-${ID.toUpperCase()}.scope`, {}],
    [`/system.slice/docker-${ID.slice(0, 12)}.scope`, {}],
    [`/system.slice/docker.service`, {}],
    [`/init.scope`, {}],
  ];
  for (const [path, want] of cases) assert.deepEqual(parseCgroup(path), want, path);
});

test("parseCgroup: the outermost container wins; a container cannot name itself another one", () => {
  // A process in container ID made a sub-cgroup named like container ID2 (delegated cgroupns).
  assert.deepEqual(parseCgroup(`/system.slice/docker-${ID}.scope/docker-${ID2}.scope`), {
    containerId: ID,
    containerRuntime: "docker",
  });
  assert.deepEqual(parseCgroup(`/docker/${ID}/docker/${ID2}`), {
    containerId: ID,
    containerRuntime: "docker",
  });
  // ...or like a pod: pods are only read above the container.
  assert.deepEqual(parseCgroup(`/machine.slice/libpod-${ID}.scope/kubepods/besteffort/pod${POD}/${ID2}`), {
    containerId: ID,
    containerRuntime: "podman",
  });
  // kind / Kubernetes in a container: the node's container is what the host can vouch for.
  assert.deepEqual(parseCgroup(`/system.slice/docker-${ID}.scope/kubepods/besteffort/pod${POD}/${ID2}`), {
    containerId: ID,
    containerRuntime: "docker",
  });
  assert.equal(containerOf(trusted(`/system.slice/docker-${ID}.scope/docker-${ID2}.scope`))?.id, ID);
});

test("containerOf carries the pod; quotaKeys stay uid and container", () => {
  assert.deepEqual(containerOf(trusted(`/kubepods/burstable/pod${POD}/${ID}`)), {
    runtime: "kubepods",
    id: ID,
    podUid: POD,
    qosClass: "burstable",
  });
  assert.equal(containerOf(trusted(`/kubepods/burstable/pod${POD}`)), undefined);
  assert.deepEqual(
    quotaKeys({ uid: 0, cgroup: `/kubepods/burstable/pod${POD}/${ID}/container`, cgroupTrusted: true }),
    ["uid:0", `container:${ID}`],
  );
  assert.deepEqual(quotaKeys({ uid: 7, cgroup: `/kubepods/burstable/pod${POD}`, cgroupTrusted: true }), [
    "uid:7",
  ]);
});

test("an untrusted path names no container, no pod and no container quota key, whatever its shape", () => {
  for (const cgroup of [
    `/system.slice/docker-${ID}.scope`,
    `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container`,
    `/kubepods/burstable/pod${POD}/${ID}`,
    `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`,
  ]) {
    assert.deepEqual(cgroupIdentityOf({ cgroup, cgroupTrusted: false }), {}, cgroup);
    assert.equal(containerOf({ cgroup, cgroupTrusted: false }), undefined, cgroup);
    assert.deepEqual(quotaKeys({ uid: 9, cgroup, cgroupTrusted: false }), ["uid:9"], cgroup);
    assert.notDeepEqual(cgroupIdentityOf(trusted(cgroup)), {}, cgroup);
  }
});

test("namedDepth: down to the outermost container segment, else the whole path", () => {
  assert.equal(namedDepth(`/system.slice/docker-${ID}.scope/docker-${ID2}.scope/x`), 2);
  assert.equal(namedDepth(`/docker/${ID}/init.scope`), 2);
  assert.equal(namedDepth(`/kubepods/burstable/pod${POD}/${ID}/container`), 4);
  assert.equal(namedDepth(`/kubepods/burstable/pod${POD}/crio-conmon-${ID}.scope/x/y`), 4);
  assert.equal(namedDepth(`/kubepods/burstable/pod${POD}`), 3);
  assert.equal(namedDepth("/user.slice/user-1000.slice/session-3.scope"), 3);
  assert.equal(namedDepth(`/a/${ID}/b`), 2, "a bare id that is no shape ends the parse");
  assert.equal(namedDepth("/"), 0);
});
