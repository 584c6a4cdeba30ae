// fdstore.test.ts: the LISTEN_FDS parser (examples, fast-check round trips and junk) and, end to end,
// a fake systemd (python3: Node has no SOCK_DGRAM Unix sockets) that takes FDSTORE messages from
// storeFds, honours FDSTOREREMOVE, then "restarts" brokerd the way systemd does: fork, the fds at
// 3.., LISTEN_PID set to the child's own pid, exec. python3 is required: a missing one fails the
// test rather than skipping the only check of this path.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { closeFd, dupFd, listenUnix, memfdCreate, sdNotify } from "@vfio-broker/native";
import fc from "fast-check";
import {
  fdNameProblem,
  fdStoreChanges,
  MAX_LISTEN_FDS,
  parseListenFds,
  removeStoredFds,
  storeFds,
} from "./fdstore.js";

const dir = mkdtempSync(join(tmpdir(), "vfio-fdstore-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("parseListenFds: examples", () => {
  const env = { LISTEN_PID: "42", LISTEN_FDS: "3", LISTEN_FDNAMES: "bar0:listener:grp" };
  assert.deepEqual(parseListenFds(env, 42), {
    fds: [
      { name: "bar0", fd: 3 },
      { name: "listener", fd: 4 },
      { name: "grp", fd: 5 },
    ],
  });
  assert.deepEqual(parseListenFds(env, 43), { fds: [] }, "another pid's fds are not ours");
  assert.deepEqual(parseListenFds({}, 42), { fds: [] }, "not socket-activated");
  assert.deepEqual(parseListenFds({ LISTEN_PID: "42" }, 42), { fds: [] });
  assert.deepEqual(parseListenFds({ LISTEN_PID: "42", LISTEN_FDS: "0" }, 42), { fds: [] });
  assert.deepEqual(parseListenFds({ LISTEN_PID: "42", LISTEN_FDS: "2" }, 42), {
    fds: [
      { name: "unknown", fd: 3 },
      { name: "unknown", fd: 4 },
    ],
  });
  assert.deepEqual(parseListenFds({ LISTEN_PID: "42", LISTEN_FDS: "3", LISTEN_FDNAMES: "a::" }, 42).fds, [
    { name: "a", fd: 3 },
    { name: "unknown", fd: 4 },
    { name: "unknown", fd: 5 },
  ]);
  const bad: [Record<string, string>, RegExp][] = [
    [{ LISTEN_PID: "abc", LISTEN_FDS: "1" }, /LISTEN_PID="abc" is not a process id/],
    [{ LISTEN_PID: "0", LISTEN_FDS: "1" }, /not a process id/],
    [{ LISTEN_PID: "-42", LISTEN_FDS: "1" }, /not a process id/],
    [{ LISTEN_PID: "42", LISTEN_FDS: "-1" }, /LISTEN_FDS="-1" is not a count/],
    [{ LISTEN_PID: "42", LISTEN_FDS: "1.5" }, /not a count/],
    [{ LISTEN_PID: "42", LISTEN_FDS: " 1" }, /not a count/],
    [{ LISTEN_PID: "42", LISTEN_FDS: "" }, /not a count/],
    [{ LISTEN_PID: "42", LISTEN_FDS: "99999999999999999999999" }, /more than 65536 fds/],
    [{ LISTEN_PID: "42", LISTEN_FDS: String(MAX_LISTEN_FDS + 1) }, /corrupt/],
    [{ LISTEN_PID: "42", LISTEN_FDS: "1", LISTEN_FDNAMES: "a:b" }, /2 names but LISTEN_FDS=1/],
  ];
  for (const [e, message] of bad) {
    const r = parseListenFds(e, 42);
    assert.deepEqual(r.fds, [], JSON.stringify(e));
    assert.match(r.error ?? "", message, JSON.stringify(e));
  }
});

const nameArb = fc.string({
  unit: fc.constantFrom("a", "Z", "0", "-", "_", ".", "=", " ", "~"),
  minLength: 1,
});

test("parseListenFds: property: what systemd would set parses back to the same names and fds 3..", () => {
  fc.assert(
    fc.property(fc.array(nameArb, { maxLength: 300 }), fc.integer({ min: 1, max: 4194304 }), (names, pid) => {
      const env = {
        LISTEN_PID: String(pid),
        LISTEN_FDS: String(names.length),
        LISTEN_FDNAMES: names.join(":"),
      };
      const r = parseListenFds(env, pid);
      assert.equal(r.error, undefined);
      assert.deepEqual(
        r.fds,
        names.map((name, i) => ({ name, fd: 3 + i })),
      );
      assert.deepEqual(parseListenFds(env, pid + 1), { fds: [] });
    }),
  );
});

test("parseListenFds: property: junk never throws, and any result is either an error or well formed", () => {
  const junk = fc.option(
    fc.oneof(fc.string(), fc.integer().map(String), fc.constantFrom("7", "00", "1e3", "0x10")),
    {
      nil: undefined,
    },
  );
  fc.assert(
    fc.property(junk, junk, junk, (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) => {
      const r = parseListenFds({ LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES }, 7);
      if (r.error !== undefined) {
        assert.deepEqual(r.fds, []);
        assert.ok(r.error.length > 0);
        return;
      }
      if (r.fds.length === 0) return;
      assert.equal(LISTEN_PID !== undefined && Number(LISTEN_PID), 7);
      assert.equal(r.fds.length, Number(LISTEN_FDS));
      r.fds.forEach((f, i) => {
        assert.equal(f.fd, 3 + i);
        assert.ok(f.name.length > 0 && !f.name.includes(":"));
      });
    }),
    { numRuns: 2000 },
  );
});

test("fdNameProblem / storeFds validate names before sending anything", () => {
  assert.equal(fdNameProblem("bar-0000.03.00.0-r0"), undefined);
  assert.equal(fdNameProblem("x".repeat(255)), undefined);
  assert.match(fdNameProblem("")!, /non-empty/);
  assert.match(fdNameProblem("x".repeat(256))!, /256 characters/);
  assert.match(fdNameProblem("0000:03:00.0")!, /contains ':'/);
  assert.match(fdNameProblem("a\nFDSTOREREMOVE=1")!, /control/);
  assert.match(fdNameProblem("bär")!, /non-ASCII/);
  const old = process.env.NOTIFY_SOCKET;
  delete process.env.NOTIFY_SOCKET;
  try {
    assert.throws(() => storeFds([{ name: "a:b", fd: 0 }]), /storeFds: .*contains ':'/);
    assert.throws(() => storeFds([{ name: "a", fd: -1 }]), /is not an fd/);
    assert.equal(storeFds([{ name: "ok", fd: 0 }]), false, "not under systemd");
    assert.equal(removeStoredFds("ok"), false);
    assert.throws(() => removeStoredFds("bad\n"), /control/);
  } finally {
    if (old !== undefined) process.env.NOTIFY_SOCKET = old;
  }
});

test("fdStoreChanges: a mode switch's device fds leave and join the fdstore, the rest stay", () => {
  const sockets = [
    { name: "broker.sock", fd: 3 },
    { name: "fd.sock", fd: 4 },
  ];
  const vfio = [
    { name: "vfio-group-7", fd: 20 },
    { name: "vfio-container-7", fd: 21 },
    { name: "vfio-device-0000.00.01.0", fd: 22 },
  ];
  assert.deepEqual(fdStoreChanges([...sockets, ...vfio], sockets), {
    remove: ["vfio-group-7", "vfio-container-7", "vfio-device-0000.00.01.0"],
    store: [],
  });
  assert.deepEqual(fdStoreChanges(sockets, [...sockets, ...vfio]), { remove: [], store: vfio });
  // reopened under the same name with another fd: replaced
  const again = [{ name: "vfio-device-0000.00.01.0", fd: 30 }];
  assert.deepEqual(fdStoreChanges(vfio.slice(2), again), {
    remove: ["vfio-device-0000.00.01.0"],
    store: again,
  });
  assert.deepEqual(fdStoreChanges(sockets, sockets), { remove: [], store: [] });
});

// The fake systemd. It stores fds per FDSTORE=1 message and drops them on FDSTOREREMOVE=1, until
// READY=1; then it restarts the service as systemd does and relays the child's exit status.
const FAKE_SYSTEMD = `
import array, fcntl, json, os, socket, sys
addr, node, script, sockpath = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(addr)
print(json.dumps({"ready": True}), flush=True)
store, messages = [], 0
while True:
    msg, anc, flags, _ = s.recvmsg(4096, socket.CMSG_SPACE(253 * 4))
    messages += 1
    assert not flags & socket.MSG_CTRUNC, "MSG_CTRUNC"
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    fields = dict(line.split("=", 1) for line in msg.decode().split("\\n") if line)
    if fields.get("FDSTORE") == "1":
        for fd in fds:
            # keep it as systemd would, away from 3.. and close-on-exec
            store.append((fields["FDNAME"], fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000)))
            os.close(fd)
    elif fields.get("FDSTOREREMOVE") == "1":
        for name, fd in [e for e in store if e[0] == fields["FDNAME"]]:
            os.close(fd)
        store = [e for e in store if e[0] != fields["FDNAME"]]
    if fields.get("READY") == "1":
        break
print(json.dumps({"stored": [name for name, _ in store], "messages": messages}), flush=True)
pid = os.fork()
if pid == 0:
    try:
        for i, (_, fd) in enumerate(store):
            os.dup2(fd, 3 + i)  # dup2 clears FD_CLOEXEC: these are inherited
        env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(store)),
                   LISTEN_FDNAMES=":".join(name for name, _ in store))
        env.pop("NOTIFY_SOCKET", None)
        os.execve(node, [node, script, sockpath], env)
    finally:
        os._exit(127)
_, status = os.waitpid(pid, 0)
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "childPid": pid}), flush=True)
`;

test("fake systemd: stored fds survive a restart as LISTEN_FDS; the memfd keeps its bytes, the listener its backlog", async () => {
  const notifyPath = join(dir, "notify.sock");
  const listenPath = join(dir, "brokerd.sock");
  const child = new URL("./testdata/fdstore-child.js", import.meta.url).pathname;
  const py = spawn("python3", ["-c", FAKE_SYSTEMD, notifyPath, process.execPath, child, listenPath], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const spawned = new Promise<void>((resolve, reject) => {
    py.once("spawn", resolve);
    py.once("error", (err) =>
      reject(new Error(`this test needs python3 as the fake systemd: ${err.message}`)),
    );
  });
  await spawned;
  let stderr = "";
  py.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let buffered = "";
  py.stdout.setEncoding("utf8").on("data", (d: string) => {
    buffered += d;
    for (let i = buffered.indexOf("\n"); i >= 0; i = buffered.indexOf("\n")) {
      lines.push(JSON.parse(buffered.slice(0, i)));
      buffered = buffered.slice(i + 1);
      for (const w of waiters.splice(0)) w();
    }
  });
  const exited = new Promise<number | null>((resolve) => py.once("exit", resolve));
  const line = async (key: string): Promise<Record<string, unknown>> => {
    for (;;) {
      const found = lines.find((l) => key in l);
      if (found) return found;
      const code = await Promise.race([new Promise<"more">((r) => waiters.push(() => r("more"))), exited]);
      if (code !== "more" && !lines.some((l) => key in l))
        throw new Error(`fake systemd exited ${code} before "${key}": ${stderr}`);
    }
  };
  await line("ready");

  // "brokerd" before the restart: a BAR memfd with bytes in it, a listening socket, an fd it will
  // take back out of the store, and 260 fds under one name (two datagrams).
  const bar = memfdCreate("bar0", 4096);
  writeSync(bar, Buffer.from("bytes before restart"), 0, 20, 0);
  const listener = listenUnix(listenPath);
  const gone = memfdCreate("gone", 4096);
  const many = Array.from({ length: 260 }, () => dupFd(gone));
  const old = process.env.NOTIFY_SOCKET;
  process.env.NOTIFY_SOCKET = notifyPath;
  try {
    assert.equal(
      storeFds([
        { name: "bar0", fd: bar },
        { name: "listener", fd: listener },
        { name: "gone", fd: gone },
        ...many.map((fd) => ({ name: "many", fd })),
      ]),
      true,
    );
    assert.equal(removeStoredFds("many"), true);
  } finally {
    for (const fd of [bar, listener, gone, ...many]) closeFd(fd); // "brokerd" is gone
  }
  // A client arrives while no brokerd runs: the backlog systemd holds keeps it waiting.
  let early = "";
  const earlyDone = new Promise<void>((resolve, reject) => {
    createConnection(listenPath)
      .setEncoding("utf8")
      .on("data", (d) => {
        early += d;
      })
      .on("end", resolve)
      .on("error", reject);
  });
  try {
    assert.equal(removeStoredFds("gone"), true);
    assert.equal(sdNotify("READY=1"), true);
  } finally {
    if (old === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = old;
  }

  const stored = await line("stored");
  assert.deepEqual(
    stored,
    { stored: ["bar0", "listener"], messages: 8 },
    "5 FDSTORE (260 fds of one name take two), 2 FDSTOREREMOVE, 1 READY",
  );
  const report = (await line("child")).child as Record<string, unknown>;
  const end = await line("exit");
  assert.equal(end.exit, 0, stderr);
  await earlyDone;
  assert.equal(report.pid, end.childPid);
  assert.deepEqual(report.seen, {
    LISTEN_PID: String(end.childPid),
    LISTEN_FDS: "2",
    LISTEN_FDNAMES: "bar0:listener",
  });
  assert.deepEqual(report.left, [null, null, null], "takeListenFds unsets LISTEN_* (undefined, as JSON)");
  assert.deepEqual(report.again, [], "a second take finds nothing");
  // They arrive without FD_CLOEXEC; Node's startup (libuv's uv_disable_stdio_inheritance) already
  // sets it on fds 0..15 and on the open ones right after, and takeListenFds makes sure of it.
  assert.deepEqual(report.cloexec, [true, true], "close-on-exec once taken");
  assert.deepEqual(report.names, ["bar0", "listener"]);
  assert.deepEqual(report.fds, [3, 4]);
  assert.equal(report.bar0, "bytes before restart\0\0\0\0\0\0\0\0\0\0\0\0");
  assert.equal(report.answer, `served by ${end.childPid}`);
  assert.equal(early, `served by ${end.childPid}`, "the client queued during the restart is served");
  assert.equal(await exited, 0, stderr);
});
