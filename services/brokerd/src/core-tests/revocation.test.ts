// The core in process, where grants end: revocation by a policy reload (setPolicy), by an
// operator (revokeMapping, revokeSession), by a drain; holds of delivered mappings whose holder
// (a real child process) keeps their pages booked until it releases them or exits; and ticket
// redemption (right peer, wrong pid or uid, expired, used twice, released before delivery).
import assert from "node:assert/strict";
import { after, test } from "node:test";
import type { LeaseEvent, LeaseSink, Session } from "../identity/session.js";
import {
  type Core,
  fetchFd,
  identityOf,
  map,
  openCore,
  openSession,
  PAGE,
  policy,
  reasonOf,
  rulesFor,
  stopCore,
  testScope,
  until,
} from "./support.js";
import { bookedPages, expectedBookings, expectedQuotas, quotaKeysOf } from "./views.js";

const { proc, dir } = testScope(after);

function core(yaml: string, o: Parameters<typeof openCore>[2] = {}): Core {
  return openCore(`${dir()}/state`, policy(yaml), o);
}

/** The books agree with the live objects and holds. */
function consistent(c: Core): void {
  const keys = quotaKeysOf(c.broker);
  const want = expectedQuotas(c.broker, keys);
  for (const k of keys) assert.deepEqual(c.broker.quotas.usage(k), want[k], `quota ${k}`);
  assert.deepEqual(bookedPages(c.broker), expectedBookings(c.broker));
}

/** A lease that records what the core sends down it. */
function lease(s: Session): { events: LeaseEvent[]; ended: string[] } {
  const out = { events: [] as LeaseEvent[], ended: [] as string[] };
  const sink: LeaseSink = {
    send: (e) => void out.events.push(e),
    end: async (reason) => void out.ended.push(reason),
  };
  s.lease = sink;
  return out;
}

const revocations = (l: { events: LeaseEvent[] }) =>
  l.events.flatMap((e) => (e.kind === "revocation" ? [`${e.deviceId}:${e.cookie}:${e.reason}`] : []));

test("a policy reload revokes what it no longer allows; a delivered mapping stays booked until its holder releases it", async () => {
  const c = core(rulesFor([1000, 1001]));
  const { broker } = c;
  const p = proc();
  const a = openSession(broker, identityOf(p.pid, 1000));
  const b = openSession(broker, identityOf(p.pid, 1001));
  const la = lease(a);
  const lb = lease(b);
  const dfa = broker.openDevice(a, "simA", "compact");
  const dfb = broker.openDevice(a, "simB", "compact");
  const wc = map(broker, a, dfa.id, { offset: 0n, length: 2n * PAGE, attribute: "WC", deliver: true });
  const pending = map(broker, a, dfa.id, { offset: 4n * PAGE, attribute: "WC" });
  const uc = map(broker, a, dfa.id, { offset: 8n * PAGE, attribute: "UC", deliver: true });
  map(broker, a, dfb.id, { attribute: "UC" });
  map(broker, b, broker.openDevice(b, "simA", "compact").id, { offset: 12n * PAGE, attribute: "UC" });
  // uid 1000 keeps UC on simA only; uid 1001 is not named any more.
  const next = `version: 1\nrules:\n  - name: uc-only\n    match: { uids: [1000] }\n    devices: [simA]\n    regions: [BAR0, BAR2]\n    attributes: [UC]\n    prot: [r, rw]\n`;
  const counts = broker.setPolicy(policy(next));
  assert.deepEqual(counts, { mappingsRevoked: 4, deviceFilesClosed: 2, sessionsEnded: 1, mappingsHeld: 1 });
  assert.equal(b.ended, true);
  assert.deepEqual(lb.ended, ["policy"]);
  assert.deepEqual(
    revocations(la).sort(),
    [`simA:${pending.mapping.cookie}:policy`, `simA:${wc.mapping.cookie}:policy`, "simB:0:policy"].sort(),
  );
  assert.deepEqual([...dfa.mappings.keys()], [uc.mapping.cookie]);
  assert.equal(a.deviceFiles.has(dfb.id), false);
  // The delivered WC mapping is held: its pages stay WC and its quota charged.
  const [h] = [...broker.holds.all()];
  assert.equal(h?.reason, "policy");
  assert.equal(h?.cookie, wc.mapping.cookie);
  assert.equal(broker.quotas.usage("uid:1000").mappings, 2);
  assert.equal(
    reasonOf(() => map(broker, a, dfa.id, { offset: PAGE, attribute: "UC" })),
    "held_by_revoked",
  );
  consistent(c);
  // The holder says it unmapped it: the pages are free.
  broker.releaseMapping(a, dfa.id, wc.mapping.cookie);
  assert.equal(broker.holds.size, 0);
  map(broker, a, dfa.id, { offset: PAGE, attribute: "UC" });
  consistent(c);
  await stopCore(c);
});

test("an operator revokes a mapping or a session: pending ones end at once, delivered ones are held until the holder exits", async () => {
  const c = core(rulesFor([1000]));
  const { broker } = c;
  const holder = proc();
  const s = openSession(broker, identityOf(holder.pid, 1000));
  const l = lease(s);
  const df = broker.openDevice(s, "simA", "compact");
  const pending = map(broker, s, df.id, { offset: 0n });
  assert.deepEqual(broker.revokeMapping(df.id, pending.mapping.cookie, "test"), {
    mappingsRevoked: 1,
    deviceFilesClosed: 0,
    sessionsEnded: 0,
    mappingsHeld: 0,
  });
  assert.equal(broker.quotas.usage("uid:1000").mappings, 0);
  const d1 = map(broker, s, df.id, { offset: PAGE, deliver: true });
  assert.equal(broker.revokeMapping(df.id, d1.mapping.cookie, "test").mappingsHeld, 1);
  // Revoking what is held already takes nothing more.
  assert.deepEqual(broker.revokeMapping(df.id, d1.mapping.cookie, "again"), {
    mappingsRevoked: 0,
    deviceFilesClosed: 0,
    sessionsEnded: 0,
    mappingsHeld: 1,
  });
  map(broker, s, df.id, { offset: 2n * PAGE, length: 2n * PAGE, deliver: true });
  const g3 = map(broker, s, df.id, { offset: 4n * PAGE });
  fetchFd(broker, s, g3);
  const counts = broker.revokeSession(s.id, "test");
  assert.deepEqual(counts, { mappingsRevoked: 2, deviceFilesClosed: 1, sessionsEnded: 1, mappingsHeld: 2 });
  assert.deepEqual(l.ended, ["revoked"]);
  assert.equal(revocations(l).at(-1), "simA:0:operator");
  assert.equal(broker.sessions.has(s.id), false);
  // Three holds of one live holder: 4 pages and 3 mappings stay charged, the pages booked WC.
  assert.equal(broker.holds.size, 3);
  assert.equal(broker.quotas.usage("uid:1000").bytes, 4n * PAGE);
  assert.equal(broker.quotas.usage("uid:1000").mappings, 3);
  const other = openSession(broker, identityOf(proc().pid, 1000));
  const odf = broker.openDevice(other, "simA", "compact");
  assert.equal(
    reasonOf(() => map(broker, other, odf.id, { offset: 3n * PAGE, attribute: "UC" })),
    "held_by_revoked",
  );
  consistent(c);
  // The holder exits: every hold of it ends and the pages are free.
  const unheld: string[] = [];
  broker.on("mapping.unhold", (_h, how) => unheld.push(how));
  await holder.kill();
  await until(() => broker.holds.size === 0, "the holds to end");
  assert.deepEqual(unheld, ["exit", "exit", "exit"]);
  assert.equal(broker.quotas.usage("uid:1000").bytes, 0n);
  map(broker, other, odf.id, { offset: 0n, length: 8n * PAGE, attribute: "UC" });
  consistent(c);
  assert.equal(
    reasonOf(() => broker.revokeSession(s.id, "gone")),
    "unknown_session",
  );
  await stopCore(c);
});

test("a process that exits ends its session: its delivered mappings are freed at once, never held", async () => {
  const c = core(rulesFor([1000]));
  const { broker } = c;
  const p = proc();
  const s = openSession(broker, identityOf(p.pid, 1000));
  const df = broker.openDevice(s, "simA", "compact");
  map(broker, s, df.id, { deliver: true });
  const ended: string[] = [];
  broker.on("session.end", (_s, reason) => ended.push(reason));
  await p.kill();
  await until(() => s.ended, "the session to end with its process");
  assert.deepEqual(ended, ["process-exit"]);
  assert.equal(broker.holds.size, 0);
  assert.equal(broker.quotas.size, 0);
  consistent(c);
  await stopCore(c);
});

test("drain revokes every device file of the device and refuses new ones until undrain", async () => {
  const c = core(rulesFor([1000]));
  const { broker } = c;
  const p = proc();
  const s = openSession(broker, identityOf(p.pid, 1000));
  const l = lease(s);
  const a = broker.openDevice(s, "simA", "compact");
  const b = broker.openDevice(s, "simB", "compact");
  map(broker, s, a.id, { deliver: true });
  map(broker, s, a.id, { offset: PAGE });
  map(broker, s, b.id, {});
  assert.deepEqual(broker.drainDevice("simA", "maintenance"), {
    mappingsRevoked: 2,
    deviceFilesClosed: 1,
    sessionsEnded: 0,
    mappingsHeld: 1,
  });
  assert.deepEqual(revocations(l), ["simA:0:device-drain"]);
  assert.ok(l.events.some((e) => e.kind === "device_health" && e.health === "draining"));
  assert.deepEqual([...s.deviceFiles.keys()], [b.id]);
  assert.equal(broker.healthOf("simA"), "draining");
  assert.equal(
    reasonOf(() => broker.openDevice(s, "simA", "compact")),
    "device_draining",
  );
  assert.equal(c.store.model.health.get("simA"), "draining");
  consistent(c);
  broker.undrainDevice("simA");
  assert.equal(c.store.model.health.has("simA"), false);
  const again = broker.openDevice(s, "simA", "compact");
  // The held page (0) is still WC; the rest is free.
  assert.equal(
    reasonOf(() => map(broker, s, again.id, { offset: 0n, attribute: "UC" })),
    "held_by_revoked",
  );
  map(broker, s, again.id, { offset: PAGE, attribute: "UC" });
  consistent(c);
  await stopCore(c);
});

test("ticket redemption: the right process once; a wrong pid or uid is refused without burning it", async () => {
  const c = core(rulesFor([1000]));
  const { broker } = c;
  const p = proc();
  const s = openSession(broker, identityOf(p.pid, 1000));
  const df = broker.openDevice(s, "simA", "compact");
  const g = map(broker, s, df.id, {});
  const me = { uid: 1000, pid: p.pid };
  const r1 = broker.redeemTicket(g.ticket, { uid: 1000, pid: process.pid });
  assert.equal(r1.ok ? "ok" : r1.status, "wrong_peer");
  const r2 = broker.redeemTicket(g.ticket, { uid: 1001, pid: p.pid });
  assert.equal(r2.ok ? "ok" : r2.status, "wrong_peer");
  assert.equal(g.mapping.state, "pending");
  const ok = broker.redeemTicket(g.ticket, me);
  assert.equal(ok.ok && ok.mapping, g.mapping);
  assert.equal(g.mapping.state, "delivered");
  assert.equal(broker.quotas.usage("uid:1000").pendingMappings, 0);
  assert.equal(c.store.model.mappings.get(String(df.id))?.get(String(g.mapping.cookie))?.state, "delivered");
  const twice = broker.redeemTicket(g.ticket, me);
  assert.equal(twice.ok ? "ok" : twice.status, "already_used");
  const unknown = broker.redeemTicket("0".repeat(32), me);
  assert.equal(unknown.ok ? "ok" : unknown.status, "unknown");
  // Released before delivery: its ticket delivers nothing.
  const gone = map(broker, s, df.id, { offset: PAGE });
  broker.releaseMapping(s, df.id, gone.mapping.cookie);
  const r3 = broker.redeemTicket(gone.ticket, me);
  assert.equal(r3.ok ? "ok" : r3.status, "revoked");
  consistent(c);
  await stopCore(c);
});

test("ticket redemption: an expired ticket is refused as expired", async () => {
  const c = core(rulesFor([1000]), { ticketTtlMs: 1 });
  const { broker } = c;
  const p = proc();
  const s = openSession(broker, identityOf(p.pid, 1000));
  const df = broker.openDevice(s, "simA", "compact");
  const g = map(broker, s, df.id, {});
  await until(() => Date.now() > g.expiresAt, "the ticket's expiry");
  const r = broker.redeemTicket(g.ticket, { uid: 1000, pid: p.pid });
  assert.equal(r.ok ? "ok" : r.status, "expired");
  assert.equal(g.mapping.state, "pending");
  await stopCore(c);
});
