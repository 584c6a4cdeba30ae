// guardTcpPeers on a real loopback listener: connections of one uid past its cap read the
// refusal and are closed, others of the same uid get in again once one closes, and peers that
// cannot be identified share the unknown bucket. Both lookups: the kernel's (sock_diag) and the
// /proc/net/tcp fallback; with an empty "/proc/net" every peer is unknown.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { guardTcpPeers, type TcpPeerGuardOptions } from "./tcp-peer-guard.js";

/** A server that answers "hi" to each admitted connection, behind the guard. */
async function serve(opts: Omit<TcpPeerGuardOptions, "refusal">) {
  const server = createServer((s) => s.write("hi"));
  const refused: string[] = [];
  const guard = guardTcpPeers(server, {
    ...opts,
    refusal: (key, why) => `no:${key}:${why}`,
    onRefused: (key, why) => refused.push(`${key}:${why}`),
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, guard, refused, port: (server.address() as { port: number }).port };
}

/** Connects and resolves with the first bytes the server sends (and the socket). */
function hello(port: number): Promise<{ said: string; socket: Socket }> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.on("error", () => {});
    socket.once("data", (d) => resolve({ said: d.toString(), socket }));
  });
}

for (const lookup of ["kernel", "proc"] as const)
  test(`guardTcpPeers (${lookup}): ${lookup === "kernel" ? "sock_diag" : "/proc/net/tcp"} names this uid; its cap holds, and frees`, async () => {
    const { server, guard, refused, port } = await serve({ perUid: 3, unknown: 1, total: 10, lookup });
    const me = process.getuid?.() ?? 0;
    const held = await Promise.all([hello(port), hello(port), hello(port)]);
    assert.deepEqual(
      held.map((h) => h.said),
      ["hi", "hi", "hi"],
    );
    const fourth = await hello(port);
    assert.equal(fourth.said, `no:${me}:per-peer`);
    assert.deepEqual(refused, [`${me}:per-peer`]);
    assert.equal(guard.slots.held(me), 3);
    held[0]!.socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const again = await hello(port);
    assert.equal(again.said, "hi");
    for (const h of [...held, fourth, again]) h.socket.destroy();
    server.close();
  });

test("guardTcpPeers: a peer at its cap trades its least recently used idle connection for the new one", async () => {
  const busy = new WeakSet<object>();
  const { server, guard, refused, port } = await serve({
    perUid: 3,
    unknown: 1,
    total: 10,
    evictable: (s) => !busy.has(s),
  });
  const me = process.getuid?.() ?? 0;
  const accepted: Socket[] = [];
  server.on("connection", (s) => accepted.push(s));
  const a = await hello(port);
  const b = await hello(port);
  const c = await hello(port);
  const [sa, sb, sc] = accepted;
  busy.add(sc!); // c is in use: never traded
  guard.touch(sa!); // a was used last: b is now the least recently used idle one
  const bClosed = new Promise((r) => b.socket.once("close", r));
  const d = await hello(port);
  assert.equal(d.said, "hi", "the new connection got in");
  await bClosed;
  assert.ok(sb!.destroyed && !sa!.destroyed && !sc!.destroyed);
  assert.equal(guard.slots.held(me), 3);
  // a and d idle, c busy: e trades a (touched before d arrived), then f trades d.
  const e = await hello(port);
  assert.equal(e.said, "hi");
  assert.ok(sa!.destroyed);
  // All in use: the next is refused.
  for (const s of accepted) busy.add(s);
  const f = await hello(port);
  assert.equal(f.said, `no:${me}:per-peer`);
  assert.deepEqual(refused, [`${me}:per-peer`]);
  for (const h of [a, b, c, d, e, f]) h.socket.destroy();
  server.close();
});

test("guardTcpPeers: peers not found share the unknown bucket (an empty /proc/net)", async () => {
  const empty = mkdtempSync(join(tmpdir(), "no-proc-net-"));
  const { server, port } = await serve({ perUid: 3, unknown: 1, total: 10, lookup: "proc", procNet: empty });
  const first = await hello(port);
  const second = await hello(port);
  assert.equal(first.said, "hi");
  assert.equal(second.said, "no:unknown:per-peer");
  first.socket.destroy();
  second.socket.destroy();
  server.close();
  rmSync(empty, { recursive: true });
});
