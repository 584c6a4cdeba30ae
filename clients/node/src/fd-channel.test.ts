// The client side of the fd channel against a fake fd.sock (native FdServer): statuses, the one-fd
// rule, truncated and oversize replies, and that no received fd is ever leaked.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdServer, memfdCreate } from "@vfio-broker/native";
import { FdReplySchema, FdRequestSchema, FdStatus } from "@vfio-broker/proto";
import { FdChannelError } from "./errors.js";
import { fetchFd } from "./fd-channel.js";

const path = join(tmpdir(), `vb-client-fdtest-${process.pid}.sock`);
type Behaviour = {
  reply?: MessageInitShape<typeof FdReplySchema>;
  raw?: Uint8Array;
  fds?: number;
  silent?: boolean;
};
let behaviour: Behaviour = {};
const seen: string[] = [];
const server = FdServer.listen(path);
server.onConnection((sock) => {
  void (async () => {
    const msg = await sock.recv({ maxBytes: 1024, maxFds: 0 });
    if (!msg) return sock.close();
    seen.push(fromBinary(FdRequestSchema, msg.data).ticket);
    if (behaviour.silent) {
      await sock.recv().catch(() => null); // never answer; close once the client gave up
      return sock.close();
    }
    const fds = Array.from({ length: behaviour.fds ?? 0 }, () => memfdCreate("fdtest", 4096));
    const data = behaviour.raw ?? toBinary(FdReplySchema, create(FdReplySchema, behaviour.reply ?? {}));
    await sock.send(data, fds);
    for (const fd of fds) closeFd(fd);
    sock.close();
  })();
});
after(() => server.close());

const openFds = () => readdirSync("/proc/self/fd").length;

async function expectStatus(b: Behaviour, status: string, re?: RegExp): Promise<void> {
  behaviour = b;
  const before = openFds();
  await assert.rejects(fetchFd(path, "t", { timeoutMs: 300 }), (e: Error) => {
    assert.ok(e instanceof FdChannelError, `${e.name}: ${e.message}`);
    assert.equal(e.status, status);
    if (re) assert.match(e.details, re);
    return true;
  });
  await new Promise((r) => setTimeout(r, 50)); // let the fake server close its end
  assert.equal(openFds(), before, "no fd leaked");
}

test("OK with one fd: the reply and the fd; the ticket was sent as an FdRequest", async () => {
  behaviour = { reply: { status: FdStatus.OK, cookie: 7n, mmapOffset: 0n, length: 4096n }, fds: 1 };
  const { reply, fd } = await fetchFd(path, "0123456789abcdef0123456789abcdef");
  assert.equal(reply.cookie, 7n);
  assert.equal(reply.length, 4096n);
  assert.ok(fd >= 0);
  closeFd(fd);
  assert.equal(seen.at(-1), "0123456789abcdef0123456789abcdef");
});

test("refusals carry the status name and the broker's message", async () => {
  await expectStatus(
    { reply: { status: FdStatus.EXPIRED, message: "ticket expired" } },
    "EXPIRED",
    /ticket expired/,
  );
  await expectStatus({ reply: { status: FdStatus.ALREADY_USED, message: "used" } }, "ALREADY_USED");
  await expectStatus({ reply: { status: FdStatus.WRONG_PEER, message: "other process" } }, "WRONG_PEER");
  await expectStatus({ reply: { status: FdStatus.UNKNOWN_TICKET } }, "UNKNOWN_TICKET", /refused the ticket/);
});

test("a refusal that still carries an fd: the fd is closed", async () => {
  await expectStatus({ reply: { status: FdStatus.REVOKED, message: "gone" }, fds: 1 }, "REVOKED");
});

test("OK without an fd, or with two (truncated for us): PROTOCOL, every fd closed", async () => {
  await expectStatus({ reply: { status: FdStatus.OK } }, "PROTOCOL", /exactly one fd, it carried 0/);
  await expectStatus({ reply: { status: FdStatus.OK }, fds: 2 }, "PROTOCOL", /could not be received/);
  await expectStatus({ reply: { status: FdStatus.OK }, fds: 5 }, "PROTOCOL");
});

test("garbage, silence and no listener", async () => {
  await expectStatus({ raw: Buffer.from([0xff, 0xff, 0xff]), fds: 1 }, "PROTOCOL", /not an FdReply/);
  await expectStatus({ silent: true }, "TIMEOUT", /within 300 ms/);
  await assert.rejects(fetchFd(join(tmpdir(), "vb-client-no-such.sock"), "t"), (e: Error) => {
    assert.ok(e instanceof FdChannelError);
    assert.equal(e.status, "CONNECT");
    assert.match(e.details, /nothing listens at .*; is brokerd running\?/);
    return true;
  });
});
