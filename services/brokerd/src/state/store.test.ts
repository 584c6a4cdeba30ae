// StateStore on real files: replay after reopen, compaction (and a crash between its steps), a torn
// last record, damage that must stop the start (with the file and what to do), another boot's store.
import assert from "node:assert/strict";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Ledger } from "./ledger.js";
import type { StateRecord } from "./records.js";
import { GroupWriteError, StateError, StateStore } from "./store.js";

const root = mkdtempSync(join(tmpdir(), "vfio-state-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(root, `s${++n}`);

const session = (id: string): StateRecord => ({
  t: "session.open",
  s: {
    id,
    tokenHash: "h",
    uid: 1000,
    gid: 1000,
    pid: 4242,
    startTime: "77",
    cgroup: "/",
    groups: [],
    pidfdSource: "SO_PEERPIDFD",
    clientName: "t",
    openedAt: 1,
  },
});

/** A fresh store holding a run record and the given sessions, closed again; returns its dir. */
function seeded(...ids: string[]): string {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  store.append({ t: "run", run: 1, pid: 1, at: 0, bootId: "boot1" });
  for (const id of ids) store.append(session(id));
  store.close();
  return dir;
}

test("records survive a reopen; the directory is made 0700", () => {
  const dir = fresh();
  const a = StateStore.open(dir, "boot1");
  a.store.append({ t: "run", run: 1, pid: 1, at: 0, bootId: "boot1" });
  a.store.append(session("s1"));
  a.store.close();
  const b = StateStore.open(dir, "boot1");
  assert.deepEqual([...b.model.sessions.keys()], ["s1"]);
  assert.equal(b.torn, "");
  b.store.close();
});

test("compaction keeps the state, and leaves one snapshot and one log", () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  store.append({ t: "run", run: 1, pid: 1, at: 0, bootId: "boot1" });
  // Opening and ending sessions churns the log while the live state stays small: it compacts.
  for (let i = 0; i < 10_000; i++) {
    store.append(session(`x${i}`));
    store.append({ t: "session.end", id: `x${i}` });
  }
  store.append(session("keep"));
  assert.ok(store.stats.compactions >= 1, "compacted");
  store.close();
  assert.deepEqual(
    readdirSync(dir)
      .filter((f) => f.startsWith("state."))
      .sort().length,
    2,
  );
  const b = StateStore.open(dir, "boot1");
  assert.deepEqual([...b.model.sessions.keys()], ["keep"]);
  b.store.close();
});

test("a crash after the snapshot rename but before the old log is gone: the old log is not applied again", () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  store.append({ t: "run", run: 1, pid: 1, at: 0, bootId: "boot1" });
  store.append(session("s1"));
  const oldLog = readFileSync(join(dir, "state.0.log"));
  store.compact();
  store.close();
  // Put the pre-compaction log back, as if the unlink never happened.
  writeFileSync(join(dir, "state.0.log"), oldLog);
  const b = StateStore.open(dir, "boot1");
  assert.deepEqual([...b.model.sessions.keys()], ["s1"]);
  assert.equal(existsSync(join(dir, "state.0.log")), false, "the leftover log is removed");
  b.store.close();
});

test("a torn last record is dropped and the log rewritten; the next record is readable", () => {
  const dir = seeded("s1", "s2");
  const log = join(dir, "state.0.log");
  truncateSync(log, readFileSync(log).length - 10);
  const b = StateStore.open(dir, "boot1");
  assert.ok(b.torn.length > 0);
  assert.deepEqual([...b.model.sessions.keys()], ["s1"]);
  b.store.append(session("s3"));
  b.store.close();
  const c = StateStore.open(dir, "boot1");
  assert.deepEqual([...c.model.sessions.keys()], ["s1", "s3"]);
  c.store.close();
});

test("damage stops the start and says which file and what to do", () => {
  const dir = seeded("s1", "s2");
  const log = join(dir, "state.0.log");
  writeFileSync(log, readFileSync(log, "utf8").replace('"s1"', '"s9"'));
  assert.throws(
    () => StateStore.open(dir, "boot1"),
    (e: unknown) =>
      e instanceof StateError &&
      e.file === log &&
      /line 2: CRC-32 mismatch/.test(e.message) &&
      /move the state directory aside/.test(e.message),
  );
});

test("a truncated snapshot stops the start", () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  store.append({ t: "run", run: 1, pid: 1, at: 0, bootId: "boot1" });
  store.append(session("s1"));
  store.compact();
  store.close();
  const snap = join(dir, "state.snap");
  truncateSync(snap, readFileSync(snap).length - 5);
  assert.throws(() => StateStore.open(dir, "boot1"), /state\.snap is unusable: it is truncated/);
});

test("a store from another boot is set aside (no process of that boot lives); ids go on", () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  store.append({ t: "run", run: 3, pid: 1, at: 0, bootId: "boot1" });
  store.append(session("s1"));
  store.append({
    t: "df.open",
    d: { id: "41", session: "s1", device: "sim0", layout: "compact", openedAt: 0, requestId: "" },
  });
  store.close();
  const b = StateStore.open(dir, "boot2");
  assert.match(b.discarded, /another boot \(boot1\)/);
  assert.equal(b.model.sessions.size, 0);
  assert.equal(b.model.nextDeviceFileId, 42n);
  assert.equal(b.model.run, 3);
  assert.ok(existsSync(join(dir, "previous-boot")));
  b.store.close();
});

test("the state directory is made 0700; one owned by another uid is refused", () => {
  const dir = fresh();
  StateStore.open(dir, "b").store.close();
  chmodSync(dir, 0o755);
  StateStore.open(dir, "b").store.close();
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  if (process.getuid?.() !== 0) return;
  chownSync(dir, 65534, 65534);
  assert.throws(() => StateStore.open(dir, "b"), /belongs to uid 65534/);
});

test("cork holds records until uncork, which writes them in one write and applies them", () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  store.append({ t: "run", run: 1, pid: 1, at: 0, bootId: "boot1" });
  const log = () => readFileSync(join(dir, "state.0.log"), "utf8");
  const before = log();
  store.cork();
  store.append(session("a"));
  store.append(session("b"));
  assert.equal(log(), before, "a corked record reached the file");
  assert.equal(store.model.sessions.size, 0, "a corked record was applied before it was written");
  const writes = store.stats.appends;
  store.uncork();
  assert.deepEqual([...store.model.sessions.keys()], ["a", "b"]);
  assert.equal(store.stats.appends, writes + 2);
  assert.equal(log().split("\n").length, before.split("\n").length + 2);
  store.uncork(); // nothing held: no-op
  store.close();
  const { model } = StateStore.open(dir, "boot1");
  assert.deepEqual([...model.sessions.keys()], ["a", "b"]);
});

test("a long cork (a session's cleanup) is written in pieces of at most 1024 records, never held without bound", () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  store.cork();
  for (let i = 0; i < 2500; i++) store.append(session(`s${i}`));
  assert.equal(store.model.sessions.size, 2048, "more than 1024 records were held");
  store.uncork();
  assert.equal(store.model.sessions.size, 2500);
  store.close();
});

test("a revoked mapping's hold survives a reopen and a compaction; hold.end removes it", () => {
  const dir = seeded("s1");
  const h = {
    id: "3.4096.ab",
    pid: 4242,
    startTime: "77",
    uid: 65534,
    session: "s1",
    df: "3",
    cookie: "4096",
    device: "sim0",
    region: 2,
    regionName: "BAR2",
    offset: "65536",
    length: "4096",
    attribute: "WC" as const,
    prot: "rw" as const,
    kind: "memfd" as const,
    refs: 1,
    quotaKeys: ["uid:65534"],
    rule: "workload",
    reason: "operator",
    since: 5,
    enforceAt: 0,
    enforceBy: "",
  };
  const a = StateStore.open(dir, "boot1");
  a.store.append({ t: "hold", h });
  // The session ending does not end the hold: the holder process may still map the pages.
  a.store.append({ t: "session.end", id: "s1" });
  a.store.append({ t: "hold", h: { ...h, enforceAt: 99, enforceBy: "operator" } });
  a.store.close();
  const b = StateStore.open(dir, "boot1");
  assert.deepEqual(b.store.model.holds.get(h.id), { ...h, enforceAt: 99, enforceBy: "operator" });
  b.store.compact();
  b.store.close();
  const c = StateStore.open(dir, "boot1");
  assert.equal(c.store.model.holds.get(h.id)?.enforceAt, 99, "the snapshot keeps it");
  c.store.append({ t: "hold.end", id: h.id });
  c.store.close();
  const d = StateStore.open(dir, "boot1");
  assert.equal(d.store.model.holds.size, 0);
  d.store.close();
});

test("group: the records of calls in one event-loop turn go out in one write, before any of them settles", async () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  store.append({ t: "run", run: 1, pid: 1, at: 0, bootId: "boot1" });
  const log = () => readFileSync(join(dir, "state.0.log"), "utf8");
  const before = log();
  const w0 = store.stats.writes;
  let settled = 0;
  const a = store.group(() => store.append(session("a"))).then(() => settled++);
  const b = store.group(() => store.append(session("b"))).then(() => settled++);
  assert.equal(log(), before, "held until the turn is over");
  assert.equal(store.model.sessions.size, 0, "applied before it was written");
  await Promise.resolve();
  assert.equal(settled, 0, "settled before the write");
  await Promise.all([a, b]);
  assert.equal(store.stats.writes, w0 + 1, "one write for both");
  assert.deepEqual([...store.model.sessions.keys()], ["a", "b"]);
  // Another record written while a group holds some takes them first, in order, in its write.
  const c = store.group(() => store.append(session("c")));
  store.append({ t: "session.end", id: "c" });
  assert.equal(store.stats.writes, w0 + 2);
  await c;
  assert.ok(!store.model.sessions.has("c"), "the end was applied after the opening");
  // fn throws: what it recorded is written all the same, then its error is the promise's.
  await assert.rejects(
    store.group(() => {
      store.append(session("d"));
      throw new Error("refused");
    }),
    /refused/,
  );
  assert.ok(store.model.sessions.has("d"));
  store.close();
  const { model } = StateStore.open(dir, "boot1");
  assert.deepEqual([...model.sessions.keys()], ["a", "b", "d"]);
});

test("group: a write that fails rejects every waiter with GroupWriteError and applies none of them", async () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  const inner = store as unknown as { fd: number };
  const fd = inner.fd;
  inner.fd = 1 << 20; // not an open fd: the write fails (EBADF)
  const a = store.group(() => store.append(session("a")));
  const b = store.group(() => store.append(session("b")));
  await assert.rejects(a, GroupWriteError);
  await assert.rejects(b, GroupWriteError);
  assert.equal(store.model.sessions.size, 0);
  inner.fd = fd;
  store.append(session("c"));
  store.close();
  const { model } = StateStore.open(dir, "boot1");
  assert.deepEqual([...model.sessions.keys()], ["c"]);
});

test("group through the ledger, the write failing: creations refused store_failed, endings counted and let through", async () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  const ledger = new Ledger(store);
  const inner = store as unknown as { fd: number };
  const fd = inner.fd;
  inner.fd = 1 << 20; // the write fails (EBADF)
  const a = ledger.group(() => store.append(session("a")));
  const b = ledger.group(() => store.append(session("b")));
  const end = ledger.group(() => store.append({ t: "session.end", id: "x" }), "a release");
  const threw = ledger.group(() => {
    store.append(session("c"));
    throw new Error("refused");
  });
  const storeFailed = (e: unknown) => (e as { reason?: string }).reason === "store_failed";
  await assert.rejects(a, storeFailed);
  await assert.rejects(b, storeFailed);
  await assert.rejects(threw, /refused/, "fn's own error, not the write's");
  await end; // an ending goes ahead
  assert.equal(ledger.failures, 1, "the ending's failed write is counted");
  inner.fd = fd;
  // The next write's creations are not refused for the last one's failure.
  await ledger.group(() => store.append(session("d")));
  assert.deepEqual([...store.model.sessions.keys()], ["d"]);
  store.close();
});

test("group: the ledger's freeze writes what a group holds first (the state it hands over is final)", async () => {
  const dir = fresh();
  const { store } = StateStore.open(dir, "boot1");
  const ledger = new Ledger(store);
  const w0 = store.stats.writes;
  const held = store.group(() => store.append(session("a")));
  ledger.freeze();
  assert.equal(store.stats.writes, w0 + 1, "written at the freeze, not after it");
  await held;
  store.close();
  const { model } = StateStore.open(dir, "boot1");
  assert.deepEqual([...model.sessions.keys()], ["a"]);
});
