// The workload protocol on fd.sock (proto/vfiobroker/v1/workload.proto), end to end against
// brokerd as its own process: a workload as uid 65534 says hello, lists, opens, maps BAR2 WC and
// writes through its own mmap of the fd it received; another session reads the bytes back with
// ReadRegion; an operator's revocation is pushed on the connection and the workload releases; the
// sessions quota is shared with gRPC sessions of the same uid; a bad version or frame is answered
// with an error. The ticket protocol on the same socket is covered, unchanged, by fd-grants and
// tickets.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { closeFd } from "@vfio-broker/native";
import { AdminService, Attribute, createClient, FdStatus, Layout, Prot } from "@vfio-broker/proto";
import { type BrokerProcess, NOBODY, REPO, run, startBrokerd, until } from "../lib/brokerd.js";
import { brokerClient } from "./agents/raw.js";
import { statusName, WorkloadClient } from "./agents/workload-client.js";

const AGENT = join(REPO, "test/dist/e2e/agents/workload.js");
const QUOTA_AGENT = join(REPO, "test/dist/e2e/agents/workload-quota.js");

const POLICY = `version: 1
rules:
  - name: nobody
    match: { uids: [${NOBODY}] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
    limits: { sessions: 2 }
  - name: everyone-else
    match: { any: true }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
`;

/** Runs the workload agent as uid 65534; its JSON lines come one by one. */
function workloadAgent(b: BrokerProcess, page: number, pattern: string) {
  const child = spawn(process.execPath, [AGENT, b.fdSocket, String(page), pattern], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  return {
    async next(): Promise<Record<string, unknown>> {
      const l = await lines.next();
      if (l.done) throw new Error(`the agent printed nothing more: ${stderr}`);
      return JSON.parse(l.value);
    },
    exited,
    stderr: () => stderr,
  };
}

describe("the workload protocol", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd({ policyText: POLICY });
  });
  after(() => b.stop());

  it("an unprivileged workload maps WC, writes, and hears its revocation on the same connection", {
    timeout: 60_000,
  }, async () => {
    const agent = workloadAgent(b, 3, "cafef00d0badc0de");
    const got = await agent.next();
    assert.equal(got.uid, NOBODY, "the identity is the kernel's");
    assert.equal(got.version, 1);
    assert.deepEqual(got.capabilities, ["events", "batch", "resume"]);
    assert.ok((got.devices as string[]).includes("sim0"));
    assert.equal(got.wcOnBar2, true);
    assert.deepEqual([got.effective, got.backing, got.readBack], ["WC", "MEMFD", "cafef00d0badc0de"]);
    // Another session (gRPC, root) reads the bytes the workload wrote through its own mmap.
    const rpc = brokerClient(b.socket);
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      await rpc.hello({ clientName: "reader" });
      const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
      const base = df.regions.find((r) => r.region?.index === 2)!.cookie;
      const read = await rpc.readRegion({
        deviceFileId: df.deviceFileId,
        offset: base + 3n * 4096n + 0x100n,
        length: 8,
      });
      assert.equal(Buffer.from(read.data).toString("hex"), "cafef00d0badc0de");
      // The session is a session like any other: the admin lists it and its mapping.
      const listed = (await admin.listMappings({})).mappings.filter((m) => m.sessionId === got.sessionId);
      assert.equal(listed.length, 1);
      // An operator revokes: the event comes on the workload's connection, and it releases.
      await admin.revokeMapping({
        deviceFileId: BigInt(got.deviceFileId as string),
        cookie: BigInt(got.cookie as string),
        reason: "test",
      });
      const ev = await agent.next();
      assert.equal(ev.event, "revocation");
      assert.equal(ev.cookie, got.cookie);
      assert.equal(ev.reason, "operator");
      assert.deepEqual(await agent.next(), { released: "OK", kind: "release" });
      assert.equal(await agent.exited, 0, agent.stderr());
      // Its connection closed: the session ended and holds nothing.
      await until("the workload's session to end", async () =>
        (await admin.listSessions({})).sessions.every((s) => s.sessionId !== got.sessionId)
          ? true
          : undefined,
      );
      assert.equal(
        (await admin.listMappings({})).mappings.filter((m) => m.sessionId === got.sessionId).length,
        0,
      );
    } finally {
      rpc.close();
      admin.close();
    }
  });

  it("shares the sessions quota with the same uid's gRPC sessions", { timeout: 60_000 }, async () => {
    const r = await run(process.execPath, [QUOTA_AGENT, b.socket, b.fdSocket], { uid: NOBODY });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    assert.deepEqual(out.grpc, ["OK", "OK"]);
    assert.equal(out.workloadWhileFull.status, "REFUSED");
    assert.equal(out.workloadWhileFull.code, "RESOURCE_EXHAUSTED");
    assert.match(out.workloadWhileFull.message, /session/);
    assert.equal(out.closedAfterRefusal, true);
    assert.equal(out.workloadAfterClose, "OK");
    assert.equal(out.grpcWhileFull, "RESOURCE_EXHAUSTED");
  });

  it("a workload that stops reading its events loses its session (lease-stalled), bounded", {
    timeout: 120_000,
  }, async () => {
    const c = await WorkloadClient.connect(b.fdSocket);
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      const w = (await c.hello()).reply;
      assert.equal(w.kind.case, "hello");
      const id = w.kind.case === "hello" ? w.kind.value.sessionId : "";
      // Health events for every session, which this client never reads: once the kernel's buffer
      // is full and MAX_QUEUED_EVENTS more wait in brokerd, its session ends.
      const gone = async () => (await admin.listSessions({})).sessions.every((s) => s.sessionId !== id);
      let rounds = 0;
      while (!(await gone())) {
        assert.ok(++rounds <= 5000, "the session outlived 10,000 unread events");
        await admin.drainDevice({ deviceId: "sim1", reason: "stall test" });
        await admin.undrainDevice({ deviceId: "sim1" });
      }
      assert.ok(readFileSync(b.journal, "utf8").includes('"reason":"lease-stalled"'), "the journal says why");
      // What it reads now is what was queued, then the end of the connection.
      let events = 0;
      while ((await c.event()) !== null) events++;
      assert.ok(events > 0);
    } finally {
      c.close();
      admin.close();
    }
  });

  it("answers a version it does not speak, and bad frames, with an error", async () => {
    const v0 = await WorkloadClient.connect(b.fdSocket);
    try {
      const r = (await v0.hello({ version: 0 })).reply;
      assert.equal(statusName(r.status), "UNSUPPORTED_VERSION");
      assert.match(r.message, /version 1/);
      assert.equal(await v0.reply(), null, "the connection is closed");
    } finally {
      v0.close();
    }
    const c = await WorkloadClient.connect(b.fdSocket);
    try {
      assert.equal((await c.hello()).reply.status, FdStatus.OK);
      // Not a protobuf: answered, and the connection stays usable.
      await c.sendRaw(Buffer.from([0xff, 0xff, 0xff]));
      const bad = (await c.reply())!.reply;
      assert.equal(statusName(bad.status), "BAD_REQUEST");
      // A second hello, a string over its limit, an unknown device: each its own error.
      assert.match((await c.hello()).reply.message, /first frame only/);
      const long = await c.call({ kind: { case: "openDevice", value: { deviceId: "x".repeat(65) } } });
      assert.equal(statusName(long.reply.status), "BAD_REQUEST");
      assert.match(long.reply.message, /device_id/);
      const unknown = await c.call({ kind: { case: "openDevice", value: { deviceId: "nope0" } } });
      assert.deepEqual([statusName(unknown.reply.status), unknown.reply.grpcCode], ["REFUSED", "NOT_FOUND"]);
      const list = await c.call({ kind: { case: "listDevices", value: {} } });
      assert.equal(list.reply.kind.case, "devices");
      // A frame over 3072 bytes: BAD_REQUEST, and the connection is closed.
      await c.sendRaw(Buffer.alloc(4000));
      const over = (await c.reply())!.reply;
      assert.equal(statusName(over.status), "BAD_REQUEST");
      assert.equal(await c.reply(), null);
    } finally {
      c.close();
    }
  });
});

describe("the workload protocol across a brokerd restart", () => {
  it("SIGTERM keeps grants: the session hears why, and a hello with its token resumes it", {
    timeout: 120_000,
  }, async () => {
    let b = await startBrokerd();
    let c = await WorkloadClient.connect(b.fdSocket);
    try {
      const w = (await c.hello()).reply;
      assert.equal(w.kind.case, "hello");
      const token = w.kind.case === "hello" ? w.kind.value.resumeToken : "";
      const open = (await c.call({ kind: { case: "openDevice", value: { deviceId: "sim0" } } })).reply;
      assert.equal(open.kind.case, "deviceOpened");
      const dfId = open.kind.case === "deviceOpened" ? open.kind.value.deviceFileId : 0n;
      const g = await c.call({
        kind: {
          case: "grant",
          value: {
            deviceFileId: dfId,
            regionIndex: 2,
            length: 4096n,
            attribute: Attribute.WC,
            prot: Prot.READ_WRITE,
          },
        },
      });
      assert.equal(g.fds.length, 1);
      for (const fd of g.fds) closeFd(fd);
      const cookie = g.reply.kind.case === "grant" ? g.reply.kind.value.cookie : 0n;
      const exited = new Promise((r) => b.proc.once("exit", r));
      b.proc.kill("SIGTERM");
      const ended = await c.event();
      assert.equal(ended?.kind.case, "leaseEnded");
      assert.equal(ended?.kind.case === "leaseEnded" && ended.kind.value.reason, "restart");
      assert.equal(await c.event(), null, "then the connection closes");
      c.close();
      await exited;
      b = await startBrokerd({ dir: b.dir });
      c = await WorkloadClient.connect(b.fdSocket);
      const again = (await c.hello({ version: 1, resumeToken: token })).reply;
      assert.equal(again.kind.case, "hello");
      const r = again.kind.case === "hello" ? again.kind.value : undefined;
      assert.equal(r?.resumed, true);
      assert.deepEqual(
        r?.held.map((h) => [h.deviceFileId, h.cookies]),
        [[dfId, [cookie]]],
      );
      const rel = await c.call({ kind: { case: "release", value: { deviceFileId: dfId, cookie } } });
      assert.equal(statusName(rel.reply.status), "OK");
    } finally {
      c.close();
      await b.stop();
    }
  });
});
