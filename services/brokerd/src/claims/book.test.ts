// Tests for book.ts and the policy's `match: { claims: true }` over it: a bound claim's devices go
// to exactly its pods (pod UID read from a trusted cgroup path), bounds and field checks, rebinding
// and unbinding report which pods to review.
import assert from "node:assert/strict";
import { test } from "node:test";
import { authorizeDevice, authorizeIdentity, limitsFor } from "../policy/evaluate.js";
import { type Identity, parsePolicy, UNNAMED_LIMITS } from "../policy/schema.js";
import {
  ClaimBook,
  type ClaimRec,
  checkClaim,
  MAX_CLAIMS,
  MAX_DEVICES_PER_CLAIM,
  MAX_PODS_PER_CLAIM,
} from "./book.js";

const POD_A = "0c4f2a9e-1111-2222-3333-444455556666";
const POD_B = "0c4f2a9e-1111-2222-3333-777788889999";
const CLAIM = "7d2a1c3b-aaaa-bbbb-cccc-000000000001";

const claim = (over: Partial<ClaimRec> = {}): ClaimRec => ({
  uid: CLAIM,
  namespace: "ml",
  name: "nic-claim",
  pods: [POD_A],
  devices: ["sim0"],
  ...over,
});

const inPod = (pod: string, trusted = true): Identity => ({
  uid: 1000,
  gid: 1000,
  pid: 7,
  cgroup: `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${pod.replaceAll("-", "_")}.slice/cri-containerd-${"ab".repeat(32)}.scope`,
  cgroupTrusted: trusted,
});

const POLICY = parsePolicy(
  `version: 1
rules:
  - name: dra-claims
    match: { claims: true }
    devices: ["*"]
    regions: [BAR2]
    attributes: [WC]
    prot: [rw]
    limits: { mappings: 7 }
`,
  "policy.yaml",
);

test("a claims rule grants a bound claim's devices to exactly its pods", () => {
  const book = new ClaimBook();
  const p = { ...POLICY, claims: book };
  assert.equal(authorizeIdentity(p, inPod(POD_A)).allow, false, "nothing bound: the rule matches nobody");
  book.bind(checkClaim(claim({ devices: ["sim0"] })));
  assert.equal(authorizeDevice(p, inPod(POD_A), "sim0").allow, true);
  const other = authorizeDevice(p, inPod(POD_A), "sim1");
  assert.equal(other.allow, false);
  assert.match((other as { message: string }).message, /bound to this pod's claims: sim0/);
  assert.equal(authorizeDevice(p, inPod(POD_B), "sim0").allow, false, "another pod");
  assert.equal(authorizeDevice(p, inPod(POD_A, false), "sim0").allow, false, "an untrusted cgroup path");
  assert.equal(authorizeDevice(POLICY, inPod(POD_A), "sim0").allow, false, "a policy without the book");
  assert.equal(limitsFor(p, inPod(POD_A), "sim0").mappings, 7);
  assert.deepEqual(limitsFor(p, inPod(POD_A), "sim1"), UNNAMED_LIMITS);
  assert.deepEqual(book.unbind(CLAIM), { changed: true, review: [POD_A] });
  assert.equal(authorizeDevice(p, inPod(POD_A), "sim0").allow, false, "unbound");
});

test("a device bound by two claims of one pod stays until both are unbound", () => {
  const book = new ClaimBook();
  const p = { ...POLICY, claims: book };
  const second = "7d2a1c3b-aaaa-bbbb-cccc-000000000002";
  book.bind(checkClaim(claim()));
  book.bind(checkClaim(claim({ uid: second, name: "other", devices: ["sim0", "sim1"] })));
  book.unbind(second);
  assert.equal(authorizeDevice(p, inPod(POD_A), "sim0").allow, true);
  assert.equal(authorizeDevice(p, inPod(POD_A), "sim1").allow, false);
});

test("binding again is idempotent, and a narrower binding names the pods to review", () => {
  const book = new ClaimBook();
  assert.deepEqual(book.bind(checkClaim(claim({ pods: [POD_A, POD_B] }))), { changed: true, review: [] });
  assert.deepEqual(book.bind(checkClaim(claim({ pods: [POD_B, POD_A, POD_A] }))), {
    changed: false,
    review: [],
  });
  assert.deepEqual(book.bind(checkClaim(claim({ pods: [POD_B] }))), { changed: true, review: [POD_A] });
  assert.deepEqual(book.bind(checkClaim(claim({ pods: [POD_B], devices: ["sim1"] }))), {
    changed: true,
    review: [POD_B],
  });
  assert.deepEqual(book.unbind("7d2a1c3b-aaaa-bbbb-cccc-00000000ffff"), { changed: false, review: [] });
});

test("every field is checked and every list bounded", () => {
  const bad: [Partial<ClaimRec>, string][] = [
    [{ uid: "not-a-uid" }, "claim_uid"],
    [{ namespace: "Bad_NS" }, "namespace"],
    [{ namespace: "x".repeat(64) }, "namespace"],
    [{ name: "" }, "claim_name"],
    [{ name: "a".repeat(254) }, "claim_name"],
    [{ pods: [] }, "pod_uids"],
    [{ pods: [POD_A.toUpperCase()] }, "pod_uids"],
    [{ pods: Array.from({ length: MAX_PODS_PER_CLAIM + 1 }, () => POD_A) }, "pod_uids"],
    [{ devices: [] }, "device_ids"],
    [{ devices: ["../etc"] }, "device_ids"],
    [{ devices: ["s".repeat(65)] }, "device_ids"],
    [{ devices: Array.from({ length: MAX_DEVICES_PER_CLAIM + 1 }, (_, i) => `sim${i}`) }, "device_ids"],
  ];
  for (const [over, field] of bad)
    assert.throws(() => checkClaim(claim(over)), { field }, JSON.stringify(over).slice(0, 80));
  const book = new ClaimBook();
  for (let i = 0; i < MAX_CLAIMS; i++)
    book.bind(checkClaim(claim({ uid: `7d2a1c3b-aaaa-bbbb-cccc-${String(i).padStart(12, "0")}` })));
  assert.match(book.refusal(claim({ uid: "7d2a1c3b-aaaa-bbbb-cccc-ffffffffffff" })) ?? "", /1024 claims/);
  assert.equal(
    book.refusal(claim({ uid: "7d2a1c3b-aaaa-bbbb-cccc-000000000001" })),
    undefined,
    "a rebind fits",
  );
});

test("the policy file: claims: true only, and not with any", () => {
  const rule = (match: string) =>
    `version: 1\nrules:\n  - name: r\n    match: ${match}\n    devices: ["*"]\n    regions: [BAR2]\n    attributes: [WC]\n    prot: [rw]\n`;
  assert.equal(parsePolicy(rule("{ claims: true, gids: [1000] }"), "p").rules[0]!.match.claims, true);
  assert.throws(() => parsePolicy(rule("{ claims: false }"), "p"), /claims: false/);
  assert.throws(() => parsePolicy(rule("{ any: true, claims: true }"), "p"), /any: true cannot be combined/);
});

test("the state model keeps bindings across its log and its snapshot", async () => {
  const { StateModel } = await import("../state/model.js");
  const { decodeRecord, encodeRecord } = await import("../state/records.js");
  const m = new StateModel();
  const a = checkClaim(claim());
  const b = checkClaim(claim({ uid: "7d2a1c3b-aaaa-bbbb-cccc-000000000002", pods: [POD_B] }));
  for (const r of [
    { t: "claim.bind", c: a },
    { t: "claim.bind", c: b },
    { t: "claim.unbind", uid: b.uid },
  ] as const)
    m.apply(decodeRecord(encodeRecord(r).trimEnd()));
  assert.deepEqual([...m.claims.values()], [a]);
  assert.equal(m.liveCount, 1);
  assert.deepEqual(
    [...StateModel.fromSnapshot(JSON.parse(JSON.stringify(m.snapshot()))).claims.values()],
    [a],
  );
});
