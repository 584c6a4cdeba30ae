// Tests for evaluate.ts: every deny reason and its message, first match wins, limits.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  authorizeAccess,
  authorizeDevice,
  authorizeIdentity,
  authorizeMapping,
  type Decision,
  limitsFor,
} from "./evaluate.js";
import { type Identity, parsePolicy, UNNAMED_LIMITS } from "./schema.js";

const POLICY = parsePolicy(
  `version: 1
defaults:
  limits: { deviceFiles: 2 }
rules:
  - name: sim-any-local
    match: { uids: [1000] }
    devices: ["sim*"]
    regions: [BAR0, BAR2]
    attributes: [UC]
    prot: [r, rw]
    readWrite: true
  - name: sim-wc-read
    match: { uids: [1000] }
    devices: [sim0]
    regions: [BAR2]
    attributes: [WC]
    prot: [r]
    allowDeviceFd: true
    limits: { mappings: 3 }
  - name: docker-nic
    match: { cgroups: ["/system.slice/docker-*.scope"] }
    devices: ["0000:3b:00.0"]
    regions: [BAR2]
    attributes: [WC]
    prot: [rw]
  - name: kube-readonly
    match: { gids: [2000], cgroups: ["/kubepods.slice/**"] }
    devices: ["0000:af:00.*"]
    regions: ["*"]
    attributes: [UC]
    prot: [r]
    readWrite: true
    limits: { bytes: 1MiB }
`,
  "/etc/vfio-broker/policy.yaml",
);

const user: Identity = { uid: 1000, gid: 1000, pid: 42, cgroup: "/user.slice", cgroupTrusted: false };
const nobody: Identity = { uid: 65534, gid: 65534, pid: 43, cgroup: "", cgroupTrusted: false };
const docker: Identity = {
  uid: 0,
  gid: 0,
  pid: 44,
  cgroup: "/system.slice/docker-0123abcd.scope",
  cgroupTrusted: true,
};
const pod: Identity = {
  uid: 5,
  gid: 2000,
  pid: 45,
  cgroup: "/kubepods.slice/kubepods-besteffort.slice/cri-1.scope",
  cgroupTrusted: true,
};

function denied(d: Decision): { reason: string; message: string } {
  assert.equal(d.allow, false, "expected a denial");
  if (d.allow) throw new Error("unreachable");
  return { reason: d.reason, message: d.message };
}
function allowedBy(d: Decision): string {
  if (!d.allow) assert.fail(`expected allow, got ${d.reason}: ${d.message}`);
  return d.rule.name;
}

test("no_rule: an identity no rule names is denied everything", () => {
  const expected = {
    reason: "no_rule",
    message:
      'policy denies uid 1000 (gid 1000, cgroup "/user.slice") everything: no rule in /etc/vfio-broker/policy.yaml matches this identity; add a rule whose match names it',
  };
  const stranger: Identity = { ...user };
  const empty = parsePolicy("version: 1\nrules: []\n", "/etc/vfio-broker/policy.yaml");
  assert.deepEqual(denied(authorizeIdentity(empty, stranger)), expected);
  assert.deepEqual(denied(authorizeDevice(empty, stranger, "sim0")), expected);
  assert.deepEqual(
    denied(authorizeMapping(empty, stranger, { device: "sim0", region: "BAR0", attribute: "UC", prot: "r" })),
    expected,
  );
  assert.deepEqual(
    denied(authorizeAccess(empty, stranger, { device: "sim0", region: "BAR0", write: false })),
    expected,
  );
  assert.equal(
    denied(authorizeIdentity(POLICY, nobody)).message,
    "policy denies uid 65534 (gid 65534, cgroup unknown) everything: no rule in /etc/vfio-broker/policy.yaml matches this identity; add a rule whose match names it",
  );
});

test("authorizeIdentity allows with the first rule naming the identity", () => {
  assert.equal(allowedBy(authorizeIdentity(POLICY, user)), "sim-any-local");
  assert.equal(allowedBy(authorizeIdentity(POLICY, docker)), "docker-nic");
  assert.equal(allowedBy(authorizeIdentity(POLICY, pod)), "kube-readonly");
});

test("device: the identity is known but no rule of it names the device", () => {
  assert.equal(allowedBy(authorizeDevice(POLICY, user, "sim1")), "sim-any-local");
  assert.deepEqual(denied(authorizeDevice(POLICY, user, "0000:3b:00.0")), {
    reason: "device",
    message:
      'policy rules "sim-any-local", "sim-wc-read" allow devices sim*, sim0 to uid 1000, not 0000:3b:00.0; use one of those devices or ask the operator to extend the rule',
  });
  // a hostile device string is quoted, not echoed raw
  assert.match(denied(authorizeDevice(POLICY, docker, "x\ny")).message, /not "x\\ny";/);
});

test("region, attribute, prot: the most specific reason, naming the rule and the fix", () => {
  const map = (device: string, region: string, attribute: "UC" | "WC" | "WB", prot: "r" | "rw") =>
    authorizeMapping(POLICY, docker, { device, region, attribute, prot });
  assert.equal(allowedBy(map("0000:3b:00.0", "BAR2", "WC", "rw")), "docker-nic");
  assert.deepEqual(denied(map("0000:3b:00.0", "BAR0", "WC", "rw")), {
    reason: "region",
    message:
      'policy rule "docker-nic" allows regions BAR2 on 0000:3b:00.0, not BAR0; request BAR2 or ask the operator to extend the rule',
  });
  assert.deepEqual(denied(map("0000:3b:00.0", "BAR2", "UC", "rw")), {
    reason: "attribute",
    message:
      'policy rule "docker-nic" allows attributes WC on 0000:3b:00.0 BAR2, not UC; request WC or ask the operator to extend the rule',
  });
  assert.deepEqual(denied(map("0000:3b:00.0", "BAR2", "WC", "r")), {
    reason: "prot",
    message:
      'policy rule "docker-nic" allows prot rw for WC mappings of 0000:3b:00.0 BAR2, not r; request rw or ask the operator to extend the rule',
  });
  assert.equal(denied(map("0000:3b:00.1", "BAR2", "WC", "rw")).reason, "device");
});

test("the attribute message from the design example", () => {
  const p = parsePolicy(
    "version: 1\nrules:\n  - name: sim-any-local\n    match: { any: true }\n    devices: [sim0]\n    regions: [BAR0]\n    attributes: [UC]\n    prot: [r]\n",
    "p",
  );
  assert.equal(
    denied(authorizeMapping(p, user, { device: "sim0", region: "BAR0", attribute: "WC", prot: "r" })).message,
    'policy rule "sim-any-local" allows attributes UC on sim0 BAR0, not WC; request UC or ask the operator to extend the rule',
  );
});

test("first match wins, in file order, across the whole request", () => {
  // Both rules cover sim0 BAR2 for uid 1000; UC is only in the first, WC only in the second.
  const uc = authorizeMapping(POLICY, user, { device: "sim0", region: "BAR2", attribute: "UC", prot: "r" });
  assert.equal(allowedBy(uc), "sim-any-local");
  const wc = authorizeMapping(POLICY, user, { device: "sim0", region: "BAR2", attribute: "WC", prot: "r" });
  assert.equal(allowedBy(wc), "sim-wc-read");
  assert.equal(wc.allow && wc.rule.allowDeviceFd, true);
  assert.equal(uc.allow && uc.rule.allowDeviceFd, false);
  // the union of what the surviving rules allow is named when all fail
  assert.deepEqual(
    denied(authorizeMapping(POLICY, user, { device: "sim0", region: "BAR2", attribute: "WB", prot: "r" })),
    {
      reason: "attribute",
      message:
        'policy rules "sim-any-local", "sim-wc-read" allow attributes UC, WC on sim0 BAR2, not WB; request UC or WC or ask the operator to extend the rule',
    },
  );
  // reorder: the broader rule first changes the winner
  const swapped = parsePolicy(
    `version: 1
rules:
  - name: broad
    match: { any: true }
    devices: ["*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
  - name: narrow
    match: { uids: [1000] }
    devices: [sim0]
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
`,
    "p",
  );
  assert.equal(
    allowedBy(
      authorizeMapping(swapped, user, { device: "sim0", region: "BAR0", attribute: "UC", prot: "r" }),
    ),
    "broad",
  );
});

test("read_write and prot for ReadRegion/WriteRegion", () => {
  assert.equal(
    allowedBy(authorizeAccess(POLICY, user, { device: "sim0", region: "BAR0", write: true })),
    "sim-any-local",
  );
  assert.deepEqual(
    denied(authorizeAccess(POLICY, docker, { device: "0000:3b:00.0", region: "BAR2", write: false })),
    {
      reason: "read_write",
      message:
        'policy rule "docker-nic" allows mappings of 0000:3b:00.0 BAR2 but not ReadRegion/WriteRegion (readWrite is false); map the region instead or ask the operator to set readWrite: true',
    },
  );
  assert.equal(
    allowedBy(authorizeAccess(POLICY, pod, { device: "0000:af:00.1", region: "CONFIG", write: false })),
    "kube-readonly",
  );
  assert.deepEqual(
    denied(authorizeAccess(POLICY, pod, { device: "0000:af:00.1", region: "CONFIG", write: true })),
    {
      reason: "prot",
      message:
        'policy rule "kube-readonly" allows only reads of 0000:af:00.1 CONFIG (prot r), not WriteRegion; use ReadRegion or ask the operator to add rw to the rule\'s prot',
    },
  );
  assert.equal(
    denied(authorizeAccess(POLICY, pod, { device: "0000:3b:00.0", region: "BAR0", write: false })).reason,
    "device",
  );
  assert.equal(
    denied(authorizeAccess(POLICY, user, { device: "sim0", region: "ROM", write: false })).reason,
    "region",
  );
});

test("cgroup matching: * within a segment, ** across, unknown cgroup matches no glob", () => {
  const nested: Identity = { ...docker, cgroup: "/system.slice/docker-0123abcd.scope/child" };
  assert.equal(denied(authorizeIdentity(POLICY, nested)).reason, "no_rule");
  const deepPod: Identity = { ...pod, cgroup: "/kubepods.slice/a/b/c/d.scope" };
  assert.equal(allowedBy(authorizeIdentity(POLICY, deepPod)), "kube-readonly");
  assert.equal(denied(authorizeIdentity(POLICY, { ...pod, cgroup: "" })).reason, "no_rule");
  // all given matchers must match: the gid alone is not enough
  assert.equal(denied(authorizeIdentity(POLICY, { ...pod, gid: 2001 })).reason, "no_rule");
  assert.equal(denied(authorizeIdentity(POLICY, { ...pod, cgroup: "/user.slice" })).reason, "no_rule");
});

test("limitsFor: first rule matching identity (and device), defaults filled, zero if none", () => {
  const d = { sessions: 64, fdConnections: 64, pendingMappings: 64, unreadFds: 256 };
  assert.deepEqual(limitsFor(POLICY, user), { ...d, deviceFiles: 2, mappings: 1024, bytes: 1n << 30n });
  assert.deepEqual(limitsFor(POLICY, user, "sim0"), {
    ...d,
    deviceFiles: 2,
    mappings: 1024,
    bytes: 1n << 30n,
  });
  assert.deepEqual(limitsFor(POLICY, pod, "0000:af:00.3"), {
    ...d,
    deviceFiles: 2,
    mappings: 1024,
    bytes: 1n << 20n,
  });
  assert.deepEqual(limitsFor(POLICY, pod, "0000:3b:00.0"), UNNAMED_LIMITS);
  assert.deepEqual(limitsFor(POLICY, nobody), UNNAMED_LIMITS);
  const second = parsePolicy(
    `version: 1
rules:
  - name: a
    match: { uids: [1000] }
    devices: [sim0]
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
  - name: b
    match: { uids: [1000] }
    devices: [sim1]
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
    limits: { mappings: 5 }
`,
    "p",
  );
  assert.equal(limitsFor(second, user, "sim1").mappings, 5);
  assert.equal(limitsFor(second, user).mappings, 1024);
});

test("containers and pods: matched on what the cgroup path says, outermost container first", () => {
  const cid = "4f3c2b1a".repeat(8);
  const other = "a1b2c3d4".repeat(8);
  const podUid = "0c4f2a9e-1111-2222-3333-444455556666";
  const p = parsePolicy(
    `version: 1
rules:
  - name: one-container
    match: { containers: ["${cid}"] }
    devices: [sim0]
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
  - name: by-prefix-in-pod
    match: { containers: ["a1b2*"], pods: ["${podUid}"] }
    devices: [sim1]
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
  - name: whole-pod
    match: { pods: ["${podUid}"], uids: [0] }
    devices: [sim2]
    regions: [BAR0]
    attributes: [UC]
    prot: [r]
`,
    "policy.yaml",
  );
  const id = (cgroup: string, uid = 0): Identity => ({ uid, gid: 0, pid: 1, cgroup, cgroupTrusted: true });
  const rule = (cgroup: string, uid = 0) => {
    const d = authorizeIdentity(p, id(cgroup, uid));
    return d.allow ? d.rule.name : d.reason;
  };
  const pod_ = podUid.replaceAll("-", "_");
  assert.equal(rule(`/system.slice/docker-${cid}.scope`), "one-container");
  assert.equal(rule(`/machine.slice/libpod-${cid}.scope/container`), "one-container");
  assert.equal(rule(`/system.slice/docker-${other}.scope`), "no_rule");
  // a container in the pod: by prefix
  assert.equal(
    rule(
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${pod_}.slice/cri-containerd-${other}.scope`,
    ),
    "by-prefix-in-pod",
  );
  assert.equal(rule(`/kubepods/besteffort/pod${podUid}/${other}`), "by-prefix-in-pod");
  // the same id outside the pod does not match the pod rule
  assert.equal(rule(`/system.slice/docker-${other}.scope`), "no_rule");
  // any process of the pod as uid 0 (e.g. another container of it); as another uid, no rule
  assert.equal(rule(`/kubepods/besteffort/pod${podUid}/${"9".repeat(64)}`), "whole-pod");
  assert.equal(rule(`/kubepods/besteffort/pod${podUid}/${"9".repeat(64)}`, 1000), "no_rule");
  // a process in container `other` that names its sub-cgroup like `cid` is still `other`
  assert.equal(rule(`/system.slice/docker-${other}.scope/docker-${cid}.scope`), "no_rule");
  // no container, unknown cgroup: no containers or pods entry matches
  assert.equal(rule("/user.slice/user-0.slice/session-1.scope"), "no_rule");
  assert.equal(rule(""), "no_rule");
  // a uuid-looking path outside kubepods is no pod
  assert.equal(rule(`/system.slice/pod${podUid}/${"9".repeat(64)}`), "no_rule");
  // The same paths, where identity/cgroup-trust.ts found a user could have named them: no rule, and
  // the refusal says why.
  for (const cgroup of [
    `/system.slice/docker-${cid}.scope`,
    `/user.slice/user-1000.slice/user@1000.service/docker-${cid}.scope`,
    `/kubepods/besteffort/pod${podUid}/${"9".repeat(64)}`,
  ]) {
    const d = authorizeIdentity(p, { ...id(cgroup), cgroupTrusted: false });
    assert.equal(d.allow ? d.rule.name : d.reason, "no_rule", cgroup);
    assert.match(d.allow ? "" : d.message, /not trusted to name a container or pod: see docs\/security\.md/);
  }
  // an untrusted path that names nothing is described as it is
  const plain = authorizeIdentity(p, { ...id("/user.slice"), cgroupTrusted: false });
  assert.doesNotMatch(plain.allow ? "" : plain.message, /not trusted/);
});
