// FdChannelConnection: one fd-channel connection reused for all of a client's fetches. Against a
// fake fd.sock that serves many requests per connection (as brokerd does): reuse, refusals keep
// the connection, a connection the broker closed while idle is replaced transparently, no fd leaks.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, beforeEach, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdServer, memfdCreate } from "@vfio-broker/native";
import { FdReplySchema, FdRequestSchema, FdStatus } from "@vfio-broker/proto";
import { FdChannelError } from "./errors.js";
import { FdChannelConnection, fdSocketCandidates } from "./fd-channel.js";

const path = join(tmpdir(), `vb-client-fdconn-${process.pid}.sock`);
let connections = 0;
let requests = 0;
const server = FdServer.listen(path);
server.onConnection((sock) => {
  connections++;
  void (async () => {
    for (;;) {
      const msg = await sock.recv({ maxBytes: 1024, maxFds: 0 }).catch(() => null);
      if (!msg) return sock.close();
      requests++;
      const ticket = fromBinary(FdRequestSchema, msg.data).ticket;
      if (ticket === "refuse") {
        await sock.send(
          toBinary(FdReplySchema, create(FdReplySchema, { status: FdStatus.EXPIRED, message: "late" })),
        );
        continue;
      }
      const fd = memfdCreate("fdconn", 4096);
      await sock.send(
        toBinary(FdReplySchema, create(FdReplySchema, { status: FdStatus.OK, cookie: 1n, length: 4096n })),
        [fd],
      );
      closeFd(fd);
      // Like brokerd's idle timeout: the broker hangs up after answering.
      if (ticket === "then-hang-up") return sock.close();
    }
  })();
});
after(() => server.close());
beforeEach(() => {
  connections = 0;
  requests = 0;
});

const openFds = () => readdirSync("/proc/self/fd").length;

test("requests are pipelined: the second is sent before the first is answered, and replies match in order", async () => {
  // A server that answers nothing until it holds two requests (a client that waits for each reply
  // before sending the next would hang here), then answers them in order, each naming its ticket.
  const p2 = join(tmpdir(), `vb-client-fdpipe-${process.pid}.sock`);
  const s2 = FdServer.listen(p2);
  s2.onConnection((sock) => {
    void (async () => {
      const a = await sock.recv({ maxBytes: 1024, maxFds: 0 });
      const b = await sock.recv({ maxBytes: 1024, maxFds: 0 });
      for (const m of [a, b]) {
        const ticket = fromBinary(FdRequestSchema, m!.data).ticket;
        await sock.send(
          toBinary(FdReplySchema, create(FdReplySchema, { status: FdStatus.OK, message: ticket })),
        );
      }
    })();
  });
  const c = new FdChannelConnection(p2);
  try {
    const [x, y] = await Promise.all([
      c.request({ ticket: "first" }, { timeoutMs: 5000 }, false),
      c.request({ ticket: "second" }, { timeoutMs: 5000 }, false),
    ]);
    assert.deepEqual([x.reply.message, y.reply.message], ["first", "second"]);
  } finally {
    c.close();
    s2.close();
  }
});

test("fetches share one connection", async () => {
  const c = new FdChannelConnection(path);
  const got = await Promise.all([c.fetch("a"), c.fetch("b"), c.fetch("c")]);
  for (const g of got) closeFd(g.fd);
  assert.equal(requests, 3);
  assert.equal(connections, 1);
  c.close();
});

test("a refusal keeps the connection; the next fetch uses it", async () => {
  const c = new FdChannelConnection(path);
  await assert.rejects(
    c.fetch("refuse"),
    (e: Error) => e instanceof FdChannelError && e.status === "EXPIRED",
  );
  closeFd((await c.fetch("ok")).fd);
  assert.equal(connections, 1);
  c.close();
});

test("a connection the broker closed while idle is replaced without failing the fetch; no fd leaks", async () => {
  const c = new FdChannelConnection(path);
  try {
    closeFd((await c.fetch("then-hang-up")).fd);
    await new Promise((r) => setTimeout(r, 50)); // the broker's close reaches us
    const before = openFds(); // includes our dead socket
    closeFd((await c.fetch("ok")).fd);
    assert.equal(connections, 2);
    c.close();
    await new Promise((r) => setTimeout(r, 50)); // the fake server (in this process) closes its end
    assert.equal(openFds(), before - 1, "the dead socket was closed, the new one too; nothing else is open");
    await assert.rejects(c.fetch("x"), /client was closed/);
  } finally {
    c.close();
  }
});

test("fdSocketCandidates: next to the broker socket first, then the advertised path", () => {
  assert.deepEqual(fdSocketCandidates("/mnt/vfio/broker.sock", "fd.sock", "/run/vfio-broker/fd.sock"), [
    "/mnt/vfio/fd.sock",
    "/run/vfio-broker/fd.sock",
  ]);
  // the same directory: one candidate
  assert.deepEqual(
    fdSocketCandidates("/run/vfio-broker/broker.sock", "fd.sock", "/run/vfio-broker/fd.sock"),
    ["/run/vfio-broker/fd.sock"],
  );
  // no name (different directories, or an older brokerd): the advertised path, then fd.sock beside
  assert.deepEqual(fdSocketCandidates("/mnt/broker.sock", "", "/srv/fd/fd.sock"), [
    "/srv/fd/fd.sock",
    "/mnt/fd.sock",
  ]);
  assert.deepEqual(fdSocketCandidates("/mnt/broker.sock", "", ""), ["/mnt/fd.sock"]);
  // a name with a slash is not a name: ignored
  assert.deepEqual(fdSocketCandidates("/mnt/broker.sock", "../etc/x", "/run/fd.sock"), [
    "/run/fd.sock",
    "/mnt/fd.sock",
  ]);
});

test("FdChannelConnection tries its candidates in order and sticks to the one that accepted", async () => {
  const c = new FdChannelConnection([join(dirname(path), "absent.sock"), path]);
  assert.equal(c.path, join(dirname(path), "absent.sock"));
  const { fd } = await c.fetch("t1");
  closeFd(fd);
  assert.equal(c.path, path);
  c.close();
  const none = new FdChannelConnection(["/nonexistent/a.sock", "/nonexistent/b.sock"]);
  await assert.rejects(
    none.fetch("t"),
    /cannot reach the fd channel \(\/nonexistent\/a\.sock: ENOENT; \/nonexistent\/b\.sock: ENOENT\)/,
  );
  none.close();
});
