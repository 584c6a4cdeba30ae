// The core in process across a restart: a Broker on a real StateStore in a temp dir makes grants
// and stops keeping them; a second Broker on the same store restores them. What it restores is
// the state before (sessions, device files, mappings, holds, quotas, page bookings), the replay of
// the store's files says the same as the live core, and each process resumes its own session
// (and only its own); a process that exited meanwhile has everything it held released.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import type { Broker } from "../broker.js";
import type { Session } from "../identity/session.js";
import { StateStore } from "../state/store.js";
import {
  fetchFd,
  identityOf,
  map,
  openCore,
  openSession,
  PAGE,
  type Proc,
  policy,
  reasonOf,
  restartCore,
  rulesFor,
  stopCore,
  stopKeepingGrants,
  testScope,
} from "./support.js";
import { bookedPages, liveView, modelView, quotaKeysOf, quotaView } from "./views.js";

const { proc, dir } = testScope(after);

const POLICY = policy(rulesFor([1000, 1001]));

/** Everything the restore must give back, normalized. */
function state(b: Broker) {
  return { grants: liveView(b), quotas: quotaView(b, quotaKeysOf(b)), pages: [...bookedPages(b)].sort() };
}

/** A core with a bit of everything: pending, delivered, shared, fallback, held, and a drained device. */
function busyCore(a: Proc, b: Proc) {
  const state = `${dir()}/state`;
  const c = openCore(state, POLICY);
  const { broker } = c;
  const s1 = openSession(broker, identityOf(a.pid, 1000));
  const s2 = openSession(broker, identityOf(b.pid, 1001));
  const df1 = broker.openDevice(s1, "simA", "compact");
  const df2 = broker.openDevice(s2, "simA", "legacy");
  const df3 = broker.openDevice(s2, "simB", "compact");
  const pending = map(broker, s1, df1.id, { offset: 0n, length: 2n * PAGE });
  const shared = map(broker, s1, df1.id, { offset: 2n * PAGE, deliver: true });
  map(broker, s1, df1.id, { offset: 2n * PAGE });
  const fallback = map(broker, s1, df1.id, { region: 0, attribute: "WC", allowFallback: true });
  fetchFd(broker, s1, fallback);
  const held = map(broker, s2, df2.id, {
    offset: 8n * PAGE,
    length: 4n * PAGE,
    attribute: "UC",
    deliver: true,
  });
  broker.revokeMapping(df2.id, held.mapping.cookie, "test");
  map(broker, s2, df2.id, { offset: 4n * PAGE, prot: "r", deliver: true });
  map(broker, s2, df3.id, { attribute: "UC" });
  broker.drainDevice("simB", "test");
  assert.equal(shared.mapping.refs, 2);
  assert.equal(broker.holds.size, 1);
  return { c, s1, s2, df1, df2, df3, pending, shared, fallback, dir: state };
}

test("restore from the recorded store gives the state before: grants, holds, quotas, page bookings", async () => {
  const a = proc();
  const b = proc();
  const { c, dir } = busyCore(a, b);
  const before = state(c.broker);
  // The replay of the files is what the live core holds, before and after the restart.
  assert.deepEqual(modelView(StateStore.replay(dir).model), before.grants);
  const c2 = restartCore(c, POLICY);
  assert.deepEqual(
    c2.restored.decisions.map((d) => [d.action, d.dropped]),
    [
      ["detached", 0],
      ["detached", 0],
    ],
  );
  assert.deepEqual(c2.restored.holds, { kept: 1, dropped: 0 });
  assert.deepEqual(state(c2.broker), before);
  assert.deepEqual(modelView(StateStore.replay(dir).model), before.grants);
  for (const s of c2.broker.sessions.values()) assert.equal(s.detached, true);
  assert.equal(c2.broker.healthOf("simB"), "draining");
  // Restored twice (no client came back in between): still the same.
  const c3 = restartCore(c2, POLICY);
  assert.deepEqual(state(c3.broker), before);
  await stopCore(c3);
});

test("each process resumes its own session; a pending ticket still delivers; ids go on", async () => {
  const a = proc();
  const b = proc();
  const { c, s1, s2, df1, df3, pending, shared } = busyCore(a, b);
  const tokens = new Map<string, string>([
    [s1.id, s1.resumeToken],
    [s2.id, s2.resumeToken],
  ]);
  const c2 = restartCore(c, POLICY);
  const { broker } = c2;
  const peer = { uid: 1000, pid: a.pid };
  assert.equal(
    reasonOf(() => broker.sessionForFd(tokens.get(s1.id)!, peer)),
    "restarting",
  );
  // Another process of the same uid with s1's token gets nothing.
  const intruder = openSession(broker, identityOf(b.pid, 1000));
  const denied: string[] = [];
  broker.on("denied", (_s, reason) => denied.push(reason));
  assert.equal(
    broker.resume(intruder, tokens.get(s1.id)!, () => {}),
    undefined,
  );
  assert.deepEqual(denied, ["resume_identity"]);
  assert.equal(
    broker.resume(intruder, "not a token", () => {}),
    undefined,
  );
  // The very process resumes it; its fresh session ends and the slot moves over.
  const fresh = openSession(broker, identityOf(a.pid, 1000));
  let attached: Session | undefined;
  const found = broker.resume(fresh, tokens.get(s1.id)!, (s) => {
    attached = s;
  });
  assert.equal(found?.id, s1.id);
  assert.equal(attached, found);
  assert.equal(fresh.ended, true);
  assert.equal(found!.detached, false);
  assert.equal(found!.slotHeld, true);
  assert.equal(broker.sessionForFd(tokens.get(s1.id)!, peer), found);
  assert.equal(broker.quotas.usage("uid:1000").sessions, 2, "the resumed session and the intruder");
  // The pending mapping's ticket, issued before the restart, delivers now.
  const d = broker.redeemTicket(pending.ticket, peer);
  assert.equal(d.ok && d.mapping.cookie, pending.mapping.cookie);
  // The shared cookie keeps its count: two releases end it.
  const df = found!.deviceFiles.get(df1.id)!;
  broker.releaseMapping(found!, df1.id, shared.mapping.cookie);
  assert.equal(df.mappings.get(shared.mapping.cookie)?.refs, 1);
  broker.releaseMapping(found!, df1.id, shared.mapping.cookie);
  assert.equal(df.mappings.has(shared.mapping.cookie), false);
  // Device-file ids are never reused across runs (df3, the last one opened, was closed by the drain).
  assert.ok(broker.openDevice(found!, "simA", "compact").id > df3.id);
  // s2 was not resumed: it still waits, with everything it holds.
  const s2now = broker.sessions.get(s2.id)!;
  assert.equal(s2now.detached, true);
  assert.equal(s2now.mappingCount, 1, "its prot r mapping (the held one is a hold, simB was drained)");
  assert.deepEqual(modelView(c2.store.model), liveView(broker));
  await stopCore(c2);
});

test("a process that exited while brokerd was down: its session, mappings and holds are released at restore", async () => {
  const a = proc();
  const b = proc();
  const { c, s2, dir } = busyCore(a, b);
  const before = state(c.broker);
  const gone = s2.id;
  // Stopped keeping grants; then b (the holder of the hold too) exits before the next start.
  stopKeepingGrants(c);
  await b.kill();
  const c2 = openCore(dir, POLICY);
  const { broker } = c2;
  assert.deepEqual(c2.restored.decisions.map((d) => [d.action, d.session === gone]).sort(), [
    ["detached", false],
    ["released", true],
  ]);
  assert.deepEqual(c2.restored.holds, { kept: 0, dropped: 1 });
  assert.equal(broker.sessions.has(gone), false);
  assert.equal(broker.holds.size, 0);
  assert.equal(broker.quotas.usage("uid:1001").mappings, 0);
  const after = state(broker);
  assert.deepEqual(
    after.grants.sessions,
    before.grants.sessions.filter((s) => s.id !== gone),
  );
  assert.deepEqual(after.quotas["uid:1000"], before.quotas["uid:1000"]);
  // Only uid 1000's pages stay booked; the replay agrees.
  assert.ok(after.pages.length < before.pages.length);
  assert.deepEqual(modelView(StateStore.replay(dir).model), after.grants);
  // The freed pages take another attribute now (they were UC, held).
  const s = openSession(broker, identityOf(a.pid, 1000));
  const df = broker.openDevice(s, "simA", "compact");
  map(broker, s, df.id, { offset: 8n * PAGE, length: 4n * PAGE, attribute: "WC" });
  await stopCore(c2);
});

test("a ticket spent by a brokerd killed before the fd left: the same CreateMapping again gets a ticket for a fresh fd of the same cookie", async () => {
  const a = proc();
  const c = openCore(`${dir()}/state`, POLICY);
  const s = openSession(c.broker, identityOf(a.pid, 1000));
  const df = c.broker.openDevice(s, "simA", "compact");
  const args = {
    deviceFileId: df.id,
    regionIndex: 2,
    offset: 0n,
    length: PAGE,
    attribute: "WC" as const,
    prot: "rw" as const,
    allowFallback: false,
    requestId: "map-1",
  };
  const first = c.broker.createMapping(s, args);
  // The redemption is recorded (map.deliver); brokerd dies before sendmsg, so the fd never left.
  fetchFd(c.broker, s, first);
  const token = s.resumeToken;
  const c2 = restartCore(c, POLICY);
  const { broker } = c2;
  const peer = { uid: 1000, pid: a.pid };
  const found = broker.resume(openSession(broker, identityOf(a.pid, 1000)), token, () => {});
  assert.ok(found);
  const spent = broker.redeemTicket(first.ticket, peer);
  assert.equal(spent.ok ? "ok" : spent.status, "unknown");
  // The retry (same request id) names the same cookie and carries a ticket; retried again before
  // it is presented, the same ticket (retries leave at most one live ticket per mapping).
  const again = broker.createMapping(found, args);
  assert.equal(again.mapping.cookie, first.mapping.cookie);
  assert.match(again.ticket, /^[0-9a-f]{32}$/);
  assert.equal(broker.createMapping(found, args).ticket, again.ticket);
  const d = broker.redeemTicket(again.ticket, peer);
  assert.equal(d.ok && d.mapping.cookie, first.mapping.cookie);
  // Nothing doubled: one mapping, one reference, in the core and in the store.
  assert.equal(found.mappingCount, 1);
  assert.equal(found.deviceFiles.get(df.id)?.mappings.get(first.mapping.cookie)?.refs, 1);
  assert.deepEqual(modelView(c2.store.model), liveView(broker));
  const c3 = restartCore(c2, POLICY);
  assert.deepEqual(modelView(c3.store.model), liveView(c3.broker));
  assert.equal(c3.broker.sessions.get(found.id)?.mappingCount, 1);
  await stopCore(c3);
});
