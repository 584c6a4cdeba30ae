// HoldBook and the revocation rules (grants/holds.ts): which ends keep a mapping booked, which
// enforcement a hold gets, the indexes by holder, session and device, conflicts, due enforcement,
// and what the messages and views say.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  enforcementFor,
  type Hold,
  HoldBook,
  heldMessage,
  heldRevocation,
  liveRevocation,
  revocationText,
  staysBooked,
} from "./holds.js";

const hold = (over: Partial<Hold> = {}): Hold => ({
  id: "h1",
  pid: 100,
  startTime: "555",
  uid: 65534,
  sessionId: "s1",
  deviceFileId: 3n,
  cookie: 0x1000n,
  deviceId: "sim0",
  regionIndex: 2,
  regionName: "BAR2",
  offset: 0x10000n,
  length: 0x2000n,
  attribute: "WC",
  prot: "rw",
  kind: "memfd",
  refs: 1,
  quotaKeys: ["uid:65534"],
  rule: "workload",
  reason: "operator",
  since: 1_000,
  enforceAt: 0,
  enforceBy: "",
  enforced: false,
  ...over,
});

test("staysBooked: a delivered mapping of a live holder stays booked unless the holder ended it", () => {
  for (const reason of [
    "operator",
    "policy",
    "device-drain",
    "device-gone",
    "shutdown",
    "revoked",
    "disconnect",
    "lease-closed",
  ])
    assert.equal(
      staysBooked(true, reason, () => true),
      true,
      reason,
    );
  // "undeliverable": the kernel refused the fd (ETOOMANYREFS), so nobody can map it.
  for (const reason of [
    "client",
    "process-exit",
    "ticket-expired",
    "store-failed",
    "resumed",
    "undeliverable",
  ])
    assert.equal(
      staysBooked(true, reason, () => true),
      false,
      reason,
    );
  // No fd went out, or nobody is left to map it.
  assert.equal(
    staysBooked(false, "operator", () => true),
    false,
  );
  assert.equal(
    staysBooked(true, "operator", () => false),
    false,
  );
});

test("enforcementFor: the operator's first, then the rule's; never for the holder's own connection ending", () => {
  const kill = { name: "workload", revoke: { enforce: "kill" as const, graceMs: 500 } };
  const none = { name: "workload", revoke: { enforce: "none" as const, graceMs: 500 } };
  assert.deepEqual(enforcementFor("policy", undefined, kill), { by: "policy:workload", graceMs: 500 });
  assert.deepEqual(enforcementFor("operator", { by: "operator", graceMs: 9 }, kill), {
    by: "operator",
    graceMs: 9,
  });
  assert.equal(enforcementFor("policy", undefined, none), undefined);
  assert.equal(enforcementFor("policy", undefined, undefined), undefined);
  assert.equal(enforcementFor("disconnect", { by: "operator", graceMs: 9 }, kill), undefined);
  assert.equal(enforcementFor("lease-closed", undefined, kill), undefined);
});

test("HoldBook indexes holds by holder, session and device, and counts bytes", () => {
  const b = new HoldBook();
  const a = hold();
  const c = hold({ id: "h2", cookie: 0x3000n, offset: 0x40000n, pid: 200, startTime: "7", sessionId: "s2" });
  b.add(a);
  b.add(c);
  assert.throws(() => b.add(a), /added twice/);
  assert.equal(b.size, 2);
  assert.equal(b.bytes, 0x4000n);
  assert.deepEqual(b.ofHolder(100, "555"), [a]);
  assert.deepEqual(b.ofHolder(100, "556"), [], "another process with the same pid holds nothing");
  assert.deepEqual(b.ofSession("s1", 3n, 0x1000n), [a]);
  assert.deepEqual(b.ofSession("s1", 3n), [a]);
  assert.deepEqual(b.ofSession("s1", 4n), []);
  assert.deepEqual(b.ofDevice("sim0").length, 2);
  assert.deepEqual(b.holders().sort(), ["100:555", "200:7"]);
  assert.equal(b.remove(a), true);
  assert.equal(b.remove(a), false);
  assert.equal(b.bytes, 0x2000n);
  assert.deepEqual(b.ofHolder(100, "555"), []);
  assert.deepEqual(b.holders(), ["200:7"]);
});

test("conflict: overlapping pages of the same region with another attribute only", () => {
  const b = new HoldBook();
  b.add(hold());
  const page = 0x1000n;
  assert.equal(b.conflict("sim0", 2, 0x10000n, 0x1000n, "UC", page)?.id, "h1");
  assert.equal(b.conflict("sim0", 2, 0x11000n, 0x1000n, "UC", page)?.id, "h1", "its last page");
  assert.equal(b.conflict("sim0", 2, 0x0n, 0x20000n, "UC", page)?.id, "h1", "a range around it");
  assert.equal(b.conflict("sim0", 2, 0x12000n, 0x1000n, "UC", page), undefined, "the page after");
  assert.equal(b.conflict("sim0", 2, 0xf000n, 0x1000n, "UC", page), undefined, "the page before");
  assert.equal(b.conflict("sim0", 2, 0x10000n, 0x1000n, "WC", page), undefined, "the same attribute");
  assert.equal(b.conflict("sim0", 0, 0x10000n, 0x1000n, "UC", page), undefined, "another region");
  assert.equal(b.conflict("sim1", 2, 0x10000n, 0x1000n, "UC", page), undefined, "another device");
});

test("due: holds whose enforcement time has come and that were not enforced yet", () => {
  const b = new HoldBook();
  const never = hold();
  const soon = hold({ id: "h2", enforceAt: 2_000, enforceBy: "operator" });
  const done = hold({ id: "h3", enforceAt: 1_500, enforced: true });
  for (const h of [never, soon, done]) b.add(h);
  assert.deepEqual(b.due(1_999), []);
  assert.deepEqual(b.due(2_000), [soon]);
});

test("what the messages and views say is what brokerd can do", () => {
  const h = hold({ enforceAt: 11_000, enforceBy: "policy:workload" });
  const msg = heldMessage(h, 6_000);
  assert.match(msg, /sim0 BAR2 bytes 0x10000-0x11fff \(8 KiB\) are still held WC by a revoked mapping/);
  assert.match(msg, /holder \(pid 100, uid 65534\) has not unmapped it \(revoked 5 s ago, reason operator\)/);
  assert.match(msg, /brokerd kills it in 5 s \(policy:workload\)/);
  assert.match(heldMessage(hold(), 1_000), /an operator may revoke it again with enforce/);
  assert.match(heldMessage(hold({ enforceAt: 1, enforced: true }), 1_000), /has killed it/);
  for (const kind of ["memfd", "sysfs", "sysfs-wc", "vfio-device-fd", "dmabuf"] as const) {
    const t = revocationText(kind);
    assert.match(t, /^asked to unmap/);
    assert.match(t, /the pages stay booked until the holder releases the mapping or its process exits$/);
  }
  assert.match(revocationText("dmabuf"), /only on device reset or close/);
  const pending = liveRevocation(false, "memfd", 0, undefined);
  assert.equal(pending.kind, "immediate");
  assert.equal(pending.enforceable, false);
  const delivered = liveRevocation(true, "sysfs-wc", 42, { enforce: "kill", graceMs: 500 });
  assert.equal(delivered.kind, "unmap-requested");
  assert.equal(delivered.holderPid, 42);
  assert.match(
    delivered.description,
    /the policy kills a holder that still holds it 500 ms after a revocation/,
  );
  const v = heldRevocation(h);
  assert.deepEqual(
    [v.kind, v.revokedReason, v.enforceAt, v.enforceBy, v.holderPid],
    ["unmap-requested", "operator", 11_000, "policy:workload", 100],
  );
});
