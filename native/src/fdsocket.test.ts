// fdsocket.test.ts: the fd channel transport: frames arrive whole with exactly their own fds,
// partial writes and reads reassemble, limits reject and close every fd (the /proc/self/fd count is
// unchanged), EOF mid-frame is an error, close() rejects pending work, FdServer handles stale files.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { raw } from "./binding.js";
import {
  closeFd,
  FdServer,
  FdSocket,
  frameNotSent,
  MAX_FDS_PER_MESSAGE,
  memfdCreate,
  NativeError,
} from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "vfio-native-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const openFds = (): string[] => readdirSync("/proc/self/fd");
const link = (fd: number): string => readlinkSync(`/proc/self/fd/${fd}`);

test("frames arrive whole, in order, each with exactly the fds sent with it", async () => {
  const [a, b] = FdSocket.pair();
  const memfds = [memfdCreate("frame-a", 1), memfdCreate("frame-b", 1), memfdCreate("frame-c", 1)];
  await a.send(Buffer.from("first"), [memfds[0]!]);
  await a.send(Buffer.from("second"));
  await a.send(Buffer.from("third"), [memfds[1]!, memfds[2]!]);
  await a.send(Buffer.alloc(0));
  const m1 = (await b.recv())!;
  const m2 = (await b.recv())!;
  const m3 = (await b.recv())!;
  const m4 = (await b.recv())!;
  assert.equal(m1.data.toString(), "first");
  assert.deepEqual(m1.fds.map(link), ["/memfd:frame-a (deleted)"]);
  assert.equal(m2.data.toString(), "second");
  assert.deepEqual(m2.fds, []);
  assert.equal(m3.data.toString(), "third");
  assert.deepEqual(m3.fds.map(link), ["/memfd:frame-b (deleted)", "/memfd:frame-c (deleted)"]);
  assert.equal(m4.data.length, 0);
  for (const fd of [...memfds, ...m1.fds, ...m3.fds]) closeFd(fd);
  a.close();
  b.close();
});

test("a 4 MiB frame is written in pieces and reassembled; its fd is attributed to it", async () => {
  const [a, b] = FdSocket.pair();
  const big = Buffer.alloc(4 << 20);
  for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) & 0xff;
  const memfd = memfdCreate("big-frame", 1);
  const recv = b.recv({ maxBytes: 8 << 20 });
  const sent = a.send(big, [memfd]);
  closeFd(memfd); // send() made its own copy: closing right away is allowed
  const sent2 = a.send(Buffer.from("after"));
  const m = (await recv)!;
  await sent;
  await sent2;
  assert.ok(m.data.equals(big));
  assert.deepEqual(m.fds.map(link), ["/memfd:big-frame (deleted)"]);
  assert.equal((await b.recv())!.data.toString(), "after");
  closeFd(m.fds[0]!);
  a.close();
  b.close();
});

test("a sender passing more fds than maxFds: the receiver rejects and no fd leaks", async () => {
  const [a, b] = FdSocket.pair();
  const sendFds = Array.from({ length: 10 }, (_, i) => memfdCreate(`too-many-${i}`, 1));
  await a.send(Buffer.from("ten fds"), sendFds);
  const before = openFds().length;
  await assert.rejects(b.recv({ maxFds: 4 }), (err: NativeError) => {
    assert.ok(err instanceof NativeError);
    assert.equal(err.code, "EMSGSIZE");
    assert.equal(err.errno, 90);
    assert.match(err.message, /more fds than the limit of 4 in one message; the 4 that arrived were closed/);
    return true;
  });
  // The receiver closed the 4 that arrived and itself (its stream position is lost); nothing else changed.
  assert.equal(openFds().length, before - 1);
  await assert.rejects(b.recv(), { code: "ECLOSED" });
  for (const fd of sendFds) closeFd(fd);
  a.close();
});

test("maxFds 0 and the default 253 limit", async () => {
  const [a, b] = FdSocket.pair();
  const fd = memfdCreate("one", 1);
  const before = openFds().length;
  await a.send(Buffer.from("x"), [fd]);
  await assert.rejects(b.recv({ maxFds: 0 }), { code: "EMSGSIZE" });
  assert.equal(openFds().length, before - 1);
  const [c, d] = FdSocket.pair();
  const many = new Array<number>(MAX_FDS_PER_MESSAGE).fill(fd);
  await c.send(Buffer.from("max"), many);
  const m = (await d.recv())!;
  assert.equal(m.fds.length, 253);
  for (const f of m.fds) closeFd(f);
  closeFd(fd);
  a.close();
  c.close();
  d.close();
});

test("a frame larger than maxBytes rejects with EMSGSIZE and closes its fds", async () => {
  const [a, b] = FdSocket.pair();
  const fd = memfdCreate("oversize", 1);
  await a.send(Buffer.alloc(100), [fd]);
  const before = openFds().length;
  await assert.rejects(b.recv({ maxBytes: 99 }), {
    code: "EMSGSIZE",
    message: /100-byte frame; the limit is maxBytes = 99/,
  });
  assert.equal(openFds().length, before - 1);
  closeFd(fd);
  a.close();
});

test("orderly EOF is null; EOF in the middle of a frame is ECONNRESET", async () => {
  const [a, b] = FdSocket.pair();
  await a.send(Buffer.from("last"));
  a.close();
  assert.equal((await b.recv())!.data.toString(), "last");
  assert.equal(await b.recv(), null);
  assert.equal(await b.recv(), null);
  b.close();
  const [c, d] = FdSocket.pair();
  const header = Buffer.alloc(4);
  header.writeUInt32BE(10);
  raw.sendmsg(c.fd, [header, Buffer.from("abc")]);
  c.close();
  await assert.rejects(d.recv(), {
    code: "ECONNRESET",
    message: /middle of a frame \(7 bytes of it received\)/,
  });
});

test("frames that arrived before the peer reset the connection are still delivered, then ECONNRESET", async () => {
  const [a, b] = FdSocket.pair();
  await b.send(Buffer.from("never read")); // a closes with unread data: the kernel resets b
  const pending = b.recv(); // waits on the poller, which then sees POLLIN and POLLERR at once
  await a.send(Buffer.from("first"));
  await a.send(Buffer.from("second"));
  a.close();
  assert.equal((await pending)!.data.toString(), "first");
  assert.equal((await b.recv())!.data.toString(), "second");
  await assert.rejects(b.recv(), { code: "ECONNRESET" });
  b.close();
});

test("fds that arrive in the middle of a frame are a protocol error and are closed", async () => {
  const [a, b] = FdSocket.pair();
  const fd = memfdCreate("mid-frame", 1);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(10);
  raw.sendmsg(a.fd, [header, Buffer.from("abc")]);
  const before = openFds().length;
  const pending = b.recv(); // reads the frame's first 7 bytes now
  raw.sendmsg(a.fd, Buffer.from("defghij"), [fd]);
  await assert.rejects(pending, { code: "EPROTO", message: /1 fds arrived in the middle of a frame/ });
  assert.equal(openFds().length, before - 1);
  closeFd(fd);
  a.close();
});

test("close() rejects pending recv with ECLOSED, closes undelivered fds, and is idempotent", async () => {
  const [a, b] = FdSocket.pair();
  const pending = b.recv();
  b.close();
  b.close();
  await assert.rejects(pending, { code: "ECLOSED" });
  await assert.rejects(b.send(Buffer.from("x")), { code: "ECLOSED" });
  a.close();
  const [c, d] = FdSocket.pair();
  const fd = memfdCreate("undelivered", 1);
  await c.send(Buffer.from("one"));
  await c.send(Buffer.from("two"), [fd]);
  assert.equal((await d.recv())!.data.toString(), "one"); // one recvmsg reads both frames; "two" stays buffered
  const before = openFds().length;
  d.close();
  assert.equal(openFds().length, before - 2, "the socket and the buffered frame's fd are closed");
  closeFd(fd);
  c.close();
});

test("send to a closed peer rejects with EPIPE; a full socket buffer waits for writability", async () => {
  const [a, b] = FdSocket.pair();
  b.close();
  await assert.rejects(a.send(Buffer.from("x")), {
    code: "EPIPE",
    message: /^sendmsg\(fd \d+\): Broken pipe$/,
  });
  a.close();
  const [c, d] = FdSocket.pair();
  const chunk = Buffer.alloc(256 << 10, 1);
  const sends = Array.from({ length: 16 }, () => c.send(chunk));
  let got = 0;
  for (let i = 0; i < 16; i++) got += (await d.recv({ maxBytes: 1 << 20 }))!.data.length;
  await Promise.all(sends);
  assert.equal(got, 16 * chunk.length);
  c.close();
  d.close();
});

test("FdServer: mode, accept, peer identity, stale file removal, live socket refused", async () => {
  const path = join(dir, "fd.sock");
  const server = FdServer.listen(path);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  const accepted = new Promise<FdSocket>((resolve) => server.onConnection(resolve));
  const client = await FdSocket.connect(path);
  const conn = await accepted;
  assert.equal(conn.peerIdentity().pid, process.pid);
  await client.send(Buffer.from("hi"));
  assert.equal((await conn.recv())!.data.toString(), "hi");
  client.close();
  conn.close();
  // Probing a live server connects to it (that connection then reads EOF), so refuse cleanly.
  assert.throws(() => FdServer.listen(path), { code: "EADDRINUSE", message: /another server is accepting/ });
  server.close();
  server.close();
  assert.throws(() => statSync(path), { code: "ENOENT" });
  // A stale socket file (its server died without unlinking) is replaced.
  closeFd(raw.listen(path, 1, 0o600));
  const again = FdServer.listen(path, { mode: 0o660 });
  assert.equal(statSync(path).mode & 0o777, 0o660);
  again.close();
  writeFileSync(path, "not a socket");
  assert.throws(() => FdServer.listen(path), {
    code: "EEXIST",
    message: /not a socket; refusing to remove it/,
  });
  await assert.rejects(FdSocket.connect(join(dir, "missing.sock")), {
    code: "ENOENT",
    message: /^connect\(.*missing\.sock\): No such file or directory$/,
  });
  assert.throws(() => FdServer.listen(join(dir, "x".repeat(120))), { code: "ENAMETOOLONG" });
});

test("abstract socket names work for listen and connect", async () => {
  const name = `@vfio-native-test-${process.pid}`;
  const server = FdServer.listen(name);
  const accepted = new Promise<FdSocket>((resolve) => server.onConnection(resolve));
  const client = await FdSocket.connect(name);
  const conn = await accepted;
  await conn.send(Buffer.from("abstract"));
  assert.equal((await client.recv())!.data.toString(), "abstract");
  client.close();
  conn.close();
  server.close();
});

test("FdServer.pause(): connections wait in the backlog and are accepted after resume()", async () => {
  const path = join(dir, "paused.sock");
  const server = FdServer.listen(path);
  const accepted: FdSocket[] = [];
  server.onConnection((s) => accepted.push(s));
  server.pause();
  const client = await FdSocket.connect(path);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(accepted.length, 0, "nothing accepted while paused");
  server.resume();
  for (let i = 0; i < 100 && accepted.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(accepted.length, 1);
  for (const s of accepted) s.close();
  client.close();
  server.close();
});

test("ETOOMANYREFS is a frame not sent (the stream is intact); other send errors are not", () => {
  assert.equal(
    frameNotSent(new NativeError("sendmsg(fd 3): Too many references", "ETOOMANYREFS", 109, "sendmsg")),
    true,
  );
  assert.equal(frameNotSent(new NativeError("sendmsg(fd 3): Broken pipe", "EPIPE", 32, "sendmsg")), false);
  assert.equal(frameNotSent(new Error("x")), false);
});

test("unreadBytes (SIOCOUTQ): never less than the bytes the peer has not read, 0 once it read them or left", async () => {
  const [a, b] = FdSocket.pair();
  const memfd = memfdCreate("unread", 1);
  assert.equal(a.unreadBytes(), 0);
  let sent = 0;
  for (const size of [0, 1, 100, 1000, 3000, 20_000]) {
    await a.send(Buffer.alloc(size), [memfd]);
    sent += 4 + size;
    // What fdpass/unread.ts relies on: the kernel's count covers at least the bytes themselves.
    assert.ok(a.unreadBytes() >= sent, `SIOCOUTQ ${a.unreadBytes()} < ${sent} bytes unread`);
  }
  for (let i = 0; i < 6; i++) for (const fd of (await b.recv())!.fds) closeFd(fd);
  assert.equal(a.unreadBytes(), 0);
  await a.send(Buffer.alloc(10), [memfd]);
  assert.ok(a.unreadBytes() > 0);
  b.close();
  assert.equal(a.unreadBytes(), 0, "the peer closed: nothing of ours is in flight");
  a.close();
  closeFd(memfd);
});

test("dropUnsent takes back frames not started, closing their fd dups; pendingSends and heldFds say what waits", async () => {
  const [a, b] = FdSocket.pair();
  const memfd = memfdCreate("held", 1);
  // Fill the socket buffer until a send has to wait.
  const big = Buffer.alloc(64 * 1024);
  let waiting: Promise<void> | undefined;
  for (let i = 0; i < 1000 && !waiting; i++) {
    const p = a.send(big);
    if (a.pendingSends > 0) waiting = p;
  }
  assert.ok(waiting, "the buffer never filled");
  waiting.catch(() => {});
  // Counted with a send waiting (the thread's readiness set is open while one waits).
  const before = openFds().length;
  const held = a.send(Buffer.from("with an fd"), [memfd]);
  assert.equal(a.heldFds, 1);
  assert.ok(openFds().length > before, "a private dup is held");
  assert.ok(a.dropUnsent() >= 1);
  await assert.rejects(held, { code: "ECANCELED" });
  assert.equal(a.heldFds, 0);
  assert.equal(openFds().length, before, "the dup was closed");
  a.close();
  b.close();
  closeFd(memfd);
});
