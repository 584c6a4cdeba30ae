// What an idle workload session holds (hello + one device open, nothing mapped), counted from two
// heap snapshots of this process (garbage collected first) around sessions that went quiet: no
// poller (its socket and its process's exit watch wait in the thread's one epoll set), no promise,
// no closure of its own, no maple tree (the device file's offset space is made with its first
// mapping). And what the exit watch must still do without a poller: a process that handed its
// connection to another and exited ends its session (process-exit), the connection still open. In-process: the core as the daemon composes it, the real fd channel and real AF_UNIX
// sockets, real processes. Counts only, never timings. And its fds: 2 (the connection, the pidfd).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readlinkSync } from "node:fs";
import { test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Layout, WorkloadRequestSchema } from "@vfio-broker/proto";
import { liveObjects, perItem } from "../core-tests/live-objects.js";
import { openCore, policy, rulesFor, stopCore, tempDir, until } from "../core-tests/support.js";
import { FdChannel } from "./channel.js";

const SESSIONS = 48;
const uid = process.getuid?.() ?? 0;

type Init = Parameters<typeof create<typeof WorkloadRequestSchema>>[1];
function frame(init: Init): Buffer {
  const body = toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, init));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}
const hello = frame({ kind: { case: "hello", value: { version: 1, clientName: "idle" } } });
const open = frame({ kind: { case: "openDevice", value: { deviceId: "simA", layout: Layout.COMPACT } } });

/**
 * The clients, in a process of their own (their sockets' objects are not counted with brokerd's):
 * each line on stdin "N" opens N more sessions (hello and one device open, both replies read) and
 * answers "ok" once they are all open.
 */
const CLIENTS = `
const net = require("node:net");
const [path, hello, open] = process.argv.slice(1);
const keep = [];
function session() {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(path, () => s.write(Buffer.concat([Buffer.from(hello, "hex"), Buffer.from(open, "hex")])));
    let got = Buffer.alloc(0), frames = 0;
    s.on("data", (d) => {
      got = Buffer.concat([got, d]);
      while (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
        got = got.subarray(4 + got.readUInt32BE(0));
        if (++frames === 2) resolve();
      }
    });
    s.on("error", reject);
    keep.push(s);
  });
}
let buf = "";
process.stdin.on("data", async (d) => {
  buf += d;
  while (buf.includes("\\n")) {
    const n = Number(buf.slice(0, buf.indexOf("\\n")));
    buf = buf.slice(buf.indexOf("\\n") + 1);
    for (let i = 0; i < n; i++) await session();
    process.stdout.write("ok\\n");
  }
});`;

/** This process's open fds: all of them, and the pidfds among them. */
function fds(): { all: number; pidfds: number } {
  const names = readdirSync("/proc/self/fd");
  let pidfds = 0;
  for (const n of names) {
    try {
      if (readlinkSync(`/proc/self/fd/${n}`) === "anon_inode:[pidfd]") pidfds++;
    } catch {} // the directory's own fd, closed by now
  }
  return { all: names.length, pidfds };
}

test("an idle workload session holds no poller, promise, closure or maple tree of its own, and 2 fds", async () => {
  const t = tempDir();
  const core = openCore(t.dir, policy(rulesFor([uid], "{ sessions: 256, fdConnections: 256 }")));
  const path = `${t.dir}/fd.sock`;
  const channel = new FdChannel(core.broker, { path, mode: 0o600 });
  const clients = spawn(
    process.execPath,
    ["-e", CLIENTS, path, hello.toString("hex"), open.toString("hex")],
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  let oks = 0;
  clients.stdout.on("data", (d: Buffer) => {
    oks += d.toString().split("ok").length - 1;
  });
  const opened = async (n: number, want: number) => {
    clients.stdin.write(`${n}\n`);
    await until(() => oks === want, `${n} sessions opened`);
    await new Promise((r) => setTimeout(r, 20)); // each connection asked for its next frame
  };
  try {
    await opened(2, 1); // what is made once is there before
    const before = liveObjects(t.dir, "before");
    const fds0 = fds();
    await opened(SESSIONS, 2);
    const fds1 = fds();
    const after = liveObjects(t.dir, "after");
    // Its connection and its process's pidfd, which the exit watch waits on itself (no dup).
    assert.equal(fds1.pidfds - fds0.pidfds, SESSIONS, "one pidfd per session");
    assert.equal(fds1.all - fds0.all, 2 * SESSIONS, "2 fds per session: the connection and the pidfd");
    assert.equal(core.broker.sessions.size, SESSIONS + 2);
    const per = perItem(before, after, SESSIONS);
    assert.equal(per("object:Session"), 1, "the sessions are there");
    assert.equal(per("object:DeviceFile"), 1, "with one device file each");
    for (const [kind, what] of [
      ["object:Poller", "pollers"],
      ["object:Promise", "promises"],
      ["object:Generator", "suspended async functions"],
      ["closure*", "closures"],
      ["object:MapleTree", "maple trees"],
      ["object:MapleNode", "maple nodes"],
    ] as const)
      assert.ok(per(kind) < 0.25, `${what} per idle session: ${per(kind)}`);
  } finally {
    clients.kill("SIGKILL");
    channel.close();
    await stopCore(core);
    t.remove();
  }
});

// The client: connects, says hello, opens a device, hands its connection to a child that keeps it
// open (stdio fd 3), prints the child's pid, and exits.
const HANDS_OFF = `
const net = require("node:net");
const { spawn } = require("node:child_process");
const [path, hello, open] = process.argv.slice(1);
const s = net.createConnection(path, () => s.write(Buffer.concat([Buffer.from(hello, "hex"), Buffer.from(open, "hex")])));
let got = Buffer.alloc(0), frames = 0;
s.on("data", (d) => {
  got = Buffer.concat([got, d]);
  while (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
    got = got.subarray(4 + got.readUInt32BE(0));
    if (++frames === 2) {
      const keeper = spawn("sleep", ["3600"], { stdio: ["ignore", "ignore", "ignore", s], detached: true });
      process.stdout.write(keeper.pid + "\\n", () => process.exit(0));
    }
  }
});`;

test("a process that handed its open connection to another and exited loses its session (process-exit)", {
  timeout: 60_000,
}, async () => {
  const t = tempDir();
  const core = openCore(t.dir, policy(rulesFor([uid], "{ sessions: 256, fdConnections: 256 }")));
  const path = `${t.dir}/fd.sock`;
  const channel = new FdChannel(core.broker, { path, mode: 0o600 });
  const ended: string[] = [];
  core.broker.on("session.end", (_s, reason: string) => ended.push(reason));
  let keeper = 0;
  try {
    const client = spawn(
      process.execPath,
      ["-e", HANDS_OFF, path, hello.toString("hex"), open.toString("hex")],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let out = "";
    client.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    const code = await new Promise<number | null>((r) => client.once("exit", r));
    assert.equal(code, 0, "the client opened its session and exited");
    keeper = Number(out.trim());
    assert.ok(keeper > 0, `the keeper's pid: ${out}`);
    await until(() => ended.length > 0, "the session's end");
    assert.deepEqual(ended, ["process-exit"], "its process's exit ended it, not its connection");
    assert.equal(core.broker.sessions.size, 0);
  } finally {
    if (keeper > 0) process.kill(keeper, "SIGKILL");
    channel.close();
    await stopCore(core);
    t.remove();
  }
});
