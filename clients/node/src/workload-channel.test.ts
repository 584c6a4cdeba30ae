// WorkloadChannel against a fake fd.sock speaking the workload protocol by a script: the welcome,
// events pushed between replies reach the handler and do not answer a request, a reply carrying
// more fds than it may is refused with every fd closed, a refusal is the gRPC call's error, and
// the connection's end is reported once, as "restart" (resume) or as the session's end; a brokerd
// killed during the hello is "brokerd gone" (the resume loop tries again).
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdServer, type FdSocket, memfdCreate } from "@vfio-broker/native";
import { FdStatus, type WorkloadEvent, WorkloadReplySchema } from "@vfio-broker/proto";
import { BrokerClientError, FdChannelError } from "./errors.js";
import { brokerdGone } from "./resume.js";
import { WorkloadChannel } from "./workload-channel.js";

type Reply = MessageInitShape<typeof WorkloadReplySchema>;
const frame = (r: Reply) => toBinary(WorkloadReplySchema, create(WorkloadReplySchema, r));
const welcome = frame({
  status: FdStatus.OK,
  kind: { case: "hello", value: { version: 1, sessionId: "s1" } },
});
const event = (e: Reply["kind"]) => frame({ status: FdStatus.OK, kind: e });

const path = join(tmpdir(), `vb-client-workload-${process.pid}.sock`);
/** What the fake brokerd does with each connection after its welcome. */
let script: (sock: FdSocket) => Promise<void> = async () => {};
/** The fake brokerd dies before answering the hello (closes with the hello unread: a reset). */
let dying = false;
const server = FdServer.listen(path);
server.onConnection((sock) => {
  void (async () => {
    if (dying) {
      await new Promise((r) => setTimeout(r, 20));
      return sock.close();
    }
    const hello = await sock.recv({ maxBytes: 4096, maxFds: 0 }).catch(() => null);
    if (!hello) return sock.close();
    await sock.send(welcome);
    await script(sock).catch(() => {});
  })();
});
after(() => server.close());

const openFds = () => readdirSync("/proc/self/fd").length;

function handlers() {
  const events: WorkloadEvent[] = [];
  const closed: { error: Error; reason: string | undefined }[] = [];
  let onClosed = () => {};
  const done = new Promise<void>((r) => {
    onClosed = r;
  });
  return {
    events,
    closed,
    done,
    h: {
      event: (e: WorkloadEvent) => events.push(e),
      closed: (error: Error, reason: string | undefined) => {
        closed.push({ error, reason });
        onClosed();
      },
    },
  };
}

test("events between replies go to the handler; replies answer requests in order; a refusal is the gRPC error", async () => {
  script = async (sock) => {
    await sock.recv({ maxBytes: 4096, maxFds: 0 });
    await sock.recv({ maxBytes: 4096, maxFds: 0 });
    await sock.send(
      event({
        case: "event",
        value: { kind: { case: "deviceHealth", value: { deviceId: "sim0", health: 2 } } },
      }),
    );
    await sock.send(frame({ status: FdStatus.OK, kind: { case: "devices", value: { devices: [] } } }));
    await sock.send(frame({ status: FdStatus.REFUSED, grpcCode: "NOT_FOUND", message: "no device x" }));
    await sock.recv({ maxBytes: 4096, maxFds: 0 });
  };
  const x = handlers();
  const ch = await WorkloadChannel.open([path], { clientName: "t" }, x.h, 5000);
  assert.equal(ch.welcome.sessionId, "s1");
  const list = ch.request({ case: "listDevices", value: {} }, "ListDevices");
  const open = ch.request({ case: "openDevice", value: { deviceId: "x" } }, "OpenDevice");
  assert.equal((await list).reply.kind.case, "devices");
  await assert.rejects(open, (e) => e instanceof BrokerClientError && e.code === "NOT_FOUND");
  assert.equal(x.events.length, 1);
  assert.equal(x.events[0]!.kind.case, "deviceHealth");
  ch.close();
  assert.equal(x.closed.length, 0, "close() is not reported as a loss");
});

test("a reply with an fd it may not carry is refused, and the fd is closed", async () => {
  script = async (sock) => {
    await sock.recv({ maxBytes: 4096, maxFds: 0 });
    const fd = memfdCreate("stray", 4096);
    await sock.send(frame({ status: FdStatus.OK, kind: { case: "deviceClosed", value: {} } }), [fd]);
    closeFd(fd);
    await sock.recv({ maxBytes: 4096, maxFds: 0 });
  };
  const x = handlers();
  const ch = await WorkloadChannel.open([path], { clientName: "t" }, x.h, 5000);
  const before = openFds();
  await assert.rejects(
    ch.request({ case: "closeDevice", value: { deviceFileId: 1n } }, "CloseDevice"),
    (e) => e instanceof FdChannelError && e.status === "PROTOCOL",
  );
  assert.equal(openFds(), before, "no fd leaked");
  ch.close();
});

test("a bare close is brokerd gone (resume); lease_ended with a reason is the session's end", async () => {
  script = async (sock) => {
    await sock.recv({ maxBytes: 4096, maxFds: 0 });
    sock.close();
  };
  const a = handlers();
  const ch = await WorkloadChannel.open([path], { clientName: "t" }, a.h, 5000);
  const pending = ch.request({ case: "listDevices", value: {} }, "ListDevices");
  await assert.rejects(pending, (e) => brokerdGone(e));
  await a.done;
  assert.equal(a.closed.length, 1);
  assert.equal(a.closed[0]!.reason, undefined);
  assert.equal(ch.open, false);

  script = async (sock) => {
    await sock.send(
      event({
        case: "event",
        value: { kind: { case: "leaseEnded", value: { reason: "operator", message: "revoked" } } },
      }),
    );
    sock.close();
  };
  const b = handlers();
  const ch2 = await WorkloadChannel.open([path], { clientName: "t" }, b.h, 5000);
  await b.done;
  assert.equal(b.closed[0]!.reason, "operator");
  await assert.rejects(
    ch2.request({ case: "listDevices", value: {} }, "ListDevices"),
    (e) =>
      e instanceof BrokerClientError &&
      e.code === "UNAVAILABLE" &&
      /session has ended \(operator\)/.test(e.details),
  );
});

test("brokerd killed during the hello: the open fails as brokerd gone (a resume tries again), no fd leaked", async () => {
  dying = true;
  try {
    const before = openFds();
    for (let i = 0; i < 5; i++)
      await assert.rejects(WorkloadChannel.open([path], { clientName: "t" }, handlers().h, 5000), (e) =>
        brokerdGone(e),
      );
    assert.equal(openFds(), before, "no fd leaked");
  } finally {
    dying = false;
  }
});
