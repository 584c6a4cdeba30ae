// The fd channel's connections as the quotas see them, on an in-process Broker (no socket): the
// fdConnections quota and its refusal (reported, nothing charged), the unreadFds charge of each
// connection and of its identity across connections, held reply fds under HELD_REPLY_FDS, and
// release giving back everything.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Broker } from "../broker.js";
import { SimBackend } from "../devices/sim.js";
import { HELD_REPLY_FDS } from "../fd-budget.js";
import { loadPolicyFile } from "../policy/index.js";
import { FdAccount, FdConnections, type FdRefusal } from "./fd-connections.js";

function broker(): { b: Broker; done: () => Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), "fd-connections-"));
  const path = join(dir, "policy.yaml");
  writeFileSync(
    path,
    [
      "version: 1",
      "rules:",
      "  - name: local",
      "    match: { any: true }",
      '    devices: ["sim*"]',
      '    regions: ["*"]',
      "    attributes: [UC]",
      "    prot: [r]",
      "    limits: { fdConnections: 2, unreadFds: 4 }",
      "",
    ].join("\n"),
  );
  chmodSync(path, 0o644);
  const b = new Broker({
    backends: [new SimBackend([])],
    policy: loadPolicyFile(path),
    pageSize: 4096n,
    ticketTtlMs: 10_000,
    maxSessions: 8,
    maxAccessBytes: 4096,
    fdSocketPath: join(dir, "fd.sock"),
  });
  return {
    b,
    done: async () => {
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, pid: process.pid };

test("fdConnections: two admitted, the third refused and reported with nothing charged; release gives back", async () => {
  const { b, done } = broker();
  try {
    const events: string[] = [];
    b.on("connection.refused", (sock, _peer, reason) => events.push(`refused ${sock} ${reason}`));
    b.on("fd.delivery", (result) => events.push(`delivery ${result}`));
    const conns = new FdConnections(b, { maxConnections: 16 });
    const a1 = conns.admit(me, { settle: () => {} });
    const a2 = conns.admit(me, { settle: () => {} });
    assert.ok(a1 instanceof FdAccount && a2 instanceof FdAccount);
    const key = a1.keys[0]!;
    assert.equal(b.quotas.usage(key).fdConnections, 2);
    const r = conns.admit(me, { settle: () => {} }) as FdRefusal;
    assert.equal(r.ok, false);
    assert.equal(r.reason, "limit:fdConnections");
    assert.match(r.message, /2 fd-channel connections of the 2 its quota allows/);
    // The advice fits a workload-protocol client too (each of its sessions is a connection).
    assert.match(r.message, /one per workload-protocol \(libvfio-broker\) session/);
    assert.deepEqual(events, ["refused fd limit:fdConnections", "delivery refused_busy"]);
    assert.equal(b.quotas.usage(key).fdConnections, 2, "a refusal charges nothing");
    assert.equal(conns.shares.total, 2);
    conns.release(a1);
    conns.release(a2);
    assert.equal(b.quotas.usage(key).fdConnections, 0);
    assert.equal(conns.shares.total, 0);
    const tight = new FdConnections(b, { maxConnections: 1 });
    const t1 = tight.admit(me, { settle: () => {} });
    assert.ok(t1 instanceof FdAccount);
    const g = tight.admit(me, { settle: () => {} }) as FdRefusal;
    assert.equal(g.reason, "limit:global_fd_connections");
    assert.match(g.message, /share a session between threads/);
    tight.release(t1);
  } finally {
    await done();
  }
});

test("unreadFds: each connection charges what its replies hold; the identity's room is across its connections", async () => {
  const { b, done } = broker();
  try {
    const conns = new FdConnections(b);
    const settled: string[] = [];
    const a1 = conns.admit(me, { settle: () => settled.push("a1") }) as FdAccount;
    const a2 = conns.admit(me, { settle: () => settled.push("a2") }) as FdAccount;
    const key = a1.keys[0]!;
    a1.charge(3);
    assert.equal(a1.unreadFds, 3);
    assert.equal(b.quotas.usage(key).unreadFds, 3);
    assert.equal(b.fdReplies.unreadFds, 3);
    assert.ok(a2.roomFor(1), "3 + 1 <= 4");
    assert.ok(!a2.roomFor(2), "3 + 2 > 4");
    a1.charge(1);
    assert.equal(b.quotas.usage(key).unreadFds, 1);
    assert.equal(a2.identityUnread(), 1);
    a2.settleIdentity();
    assert.deepEqual(settled, ["a1", "a2"], "every connection of the identity, once");
    a1.charge(0);
    assert.ok(a2.roomFor(32), "nothing unread: one batch always gets through");
    a1.charge(2);
    conns.release(a1);
    conns.release(a1);
    assert.equal(b.quotas.usage(key).unreadFds, 0, "released: nothing charged, and only once");
    assert.equal(b.fdReplies.unreadFds, 0);
    settled.length = 0;
    a2.settleIdentity();
    assert.deepEqual(settled, ["a2"], "a released connection is settled no more");
    conns.release(a2);
  } finally {
    await done();
  }
});

test("held reply fds: at most HELD_REPLY_FDS in all; paused connections counted", async () => {
  const { b, done } = broker();
  try {
    const conns = new FdConnections(b);
    assert.ok(conns.holdReplyFds(HELD_REPLY_FDS - 1));
    assert.ok(!conns.holdReplyFds(2), "over the limit: nothing taken");
    assert.equal(conns.heldReplyFds, HELD_REPLY_FDS - 1);
    assert.ok(conns.holdReplyFds(1));
    conns.releaseReplyFds(HELD_REPLY_FDS);
    assert.equal(b.fdReplies.heldFds, 0);
    conns.paused(1);
    assert.equal(b.fdReplies.pausedConnections, 1);
    conns.paused(-1);
    assert.equal(b.fdReplies.pausedConnections, 0);
  } finally {
    await done();
  }
});
