// startDaemon in this process, to see what the process holds after a start that failed part-way:
// a damaged state store (after the places and the runtime lock are open) and a broker socket
// another server accepts on (after the store, the backends, the Broker and the journal are). The
// failed start must leave the process's fds as they were and the runtime lock free, so that a
// start on the same directories, once fixed, succeeds. The same failures as a process of its own:
// test/e2e/daemon-start-failure.test.ts.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parseConfig } from "../config.js";
import { startDaemon } from "../daemon.js";
import { BrokerError } from "../errors.js";
import { StateError } from "../state/store.js";

const root = mkdtempSync(join(tmpdir(), "vfio-daemon-start-"));
chmodSync(root, 0o755);
after(() => rmSync(root, { recursive: true, force: true }));

let dirs = 0;
/** A workload dir, its private dir (the policy, the journal, the state) and the config over them. */
function place() {
  const dir = join(root, `run${++dirs}`);
  const privateDir = `${dir}.private`;
  mkdirSync(privateDir, { recursive: true, mode: 0o700 });
  const policy = join(privateDir, "policy.yaml");
  writeFileSync(policy, "version: 1\nrules: []\n", { mode: 0o644 });
  const config = parseConfig([
    "--runtime-dir",
    dir,
    "--policy",
    policy,
    "--metrics",
    "off",
    "--journal",
    join(privateDir, "journal.jsonl"),
  ]);
  assert.notEqual(config, "help");
  if (config === "help") throw new Error("unreachable");
  return { dir, privateDir, stateDir: join(privateDir, "state"), config };
}

/** This process's open fds (the one reading the list is the same number each time). */
function openFds(): string[] {
  return readdirSync("/proc/self/fd").sort();
}

/** Waits (bounded, no timing asserted) until ok() holds. */
async function settled(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(ok());
}

// Whatever a first start opens once for the life of the process (the native addon's, libuv's) is
// opened here, before any count.
test("a start and a close in this process", async () => {
  const p = place();
  const d = await startDaemon(p.config);
  await d.close("test");
});

test("a damaged state store: the start fails, every fd it opened is closed, the lock is free", async () => {
  const p = place();
  mkdirSync(p.stateDir, { mode: 0o700, recursive: true });
  writeFileSync(join(p.stateDir, "state.snap"), "not a state store\n", { mode: 0o600 });
  const before = openFds();
  await assert.rejects(
    startDaemon(p.config),
    (e) => e instanceof StateError && /move the state directory aside/.test(e.message),
  );
  assert.deepEqual(openFds(), before, "the failed start left fds open");
  assert.deepEqual(readdirSync(p.dir), [], "no socket file left in the workload dir");
  // Fixed as the message says: the same directories start (the lock is not held by a leaked fd).
  renameSync(p.stateDir, `${p.stateDir}.bad`);
  const d = await startDaemon(p.config);
  await d.close("test");
});

// The store's own files and a leftover log of another generation (a compaction cut short) alike.
for (const name of ["state.0.log", "state.snap", "state.7.log"])
  test(`${name} that is a directory: the start fails saying which path to remove, no errno trace`, async () => {
    const p = place();
    mkdirSync(join(p.stateDir, name), { mode: 0o700, recursive: true });
    const before = openFds();
    await assert.rejects(startDaemon(p.config), (e) => {
      const m = (e as Error).message;
      return (
        m.includes(join(p.stateDir, name)) && /not a regular file; remove it/.test(m) && !/EISDIR/.test(m)
      );
    });
    assert.deepEqual(openFds(), before, "the failed start left fds open");
  });

test("a broker socket another server accepts on: refused, every fd closed, the other server untouched", async () => {
  const p = place();
  mkdirSync(p.dir, { mode: 0o755, recursive: true });
  let connected = 0;
  const other: Server = createServer((c) => {
    connected++;
    c.on("close", () => connected--);
    c.on("error", () => {}); // brokerd's liveness probe connects and resets
    c.end("other\n");
  });
  await new Promise<void>((r) => other.listen(join(p.dir, "broker.sock"), r));
  try {
    const before = openFds();
    await assert.rejects(
      startDaemon(p.config),
      (e) => e instanceof BrokerError && e.reason === "socket_in_use",
    );
    // The other server's end of brokerd's liveness probe is this process's fd until it closes.
    await settled(() => connected === 0);
    assert.deepEqual(openFds(), before, "the failed start left fds open");
    assert.deepEqual(readdirSync(p.dir), ["broker.sock"], "only the other server's socket");
    assert.equal(readdirSync(p.privateDir).includes("admin.sock"), false);
    // The other server still answers on its socket.
    const said = await new Promise<string>((resolve, reject) => {
      const c = connect(join(p.dir, "broker.sock"));
      let got = "";
      c.on("data", (b) => (got += b.toString()));
      c.on("end", () => resolve(got));
      c.on("error", reject);
    });
    assert.equal(said, "other\n");
  } finally {
    await new Promise<void>((r) => other.close(() => r()));
  }
  const d = await startDaemon(p.config);
  await d.close("test");
});
