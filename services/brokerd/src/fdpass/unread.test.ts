// UnreadReplies as a pure model of the kernel's queue: replies are read in order, each takes at
// least its own bytes of kernel memory (SIOCOUTQ counts skb truesize). Whatever the peer read and
// whatever the truesizes, the count is never below the fds really unread, is exact when nothing
// (or everything) is unread, and forgets what must have been read.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { UnreadReplies } from "./unread.js";

const reply = fc.record({
  bytes: fc.integer({ min: 5, max: 5000 }),
  fds: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 32 })),
  /** Kernel overhead on top of the bytes (sk_buff, shared info, slab rounding). */
  overhead: fc.integer({ min: 0, max: 4096 }),
});

test("property: never fewer fds than the peer has not read; exact at the ends", () => {
  fc.assert(
    fc.property(fc.array(reply, { maxLength: 60 }), fc.nat(), (replies, cut) => {
      const u = new UnreadReplies();
      for (const r of replies) u.sentReply(r.bytes, r.fds);
      const read = replies.length === 0 ? 0 : cut % (replies.length + 1);
      const unread = replies.slice(read);
      const outq = unread.reduce((a, r) => a + r.bytes + r.overhead, 0);
      const trulyUnread = unread.reduce((a, r) => a + r.fds, 0);
      const counted = u.settle(outq);
      assert.ok(counted >= trulyUnread, `counted ${counted} < ${trulyUnread} unread`);
      assert.ok(counted <= replies.reduce((a, r) => a + r.fds, 0));
      if (unread.length === replies.length) assert.equal(counted, trulyUnread);
      // The peer reads the rest: nothing is counted any more.
      assert.equal(u.settle(0), 0);
      assert.equal(u.length, 0);
    }),
  );
});

test("property: with no overhead the count is exact", () => {
  fc.assert(
    fc.property(fc.array(reply, { maxLength: 60 }), fc.nat(), (replies, cut) => {
      const u = new UnreadReplies();
      for (const r of replies) u.sentReply(r.bytes, r.fds);
      const read = replies.length === 0 ? 0 : cut % (replies.length + 1);
      const unread = replies.slice(read);
      // Merged runs of fd-less replies make the suffix boundary fall inside a run: still exact for fds.
      const outq = unread.reduce((a, r) => a + r.bytes, 0);
      const counted = u.settle(outq);
      assert.equal(
        counted,
        unread.reduce((a, r) => a + r.fds, 0),
      );
    }),
  );
});

test("held replies count until they are in the kernel; settling never forgets them", () => {
  const u = new UnreadReplies();
  u.sentReply(100, 16);
  u.hold(16);
  assert.equal(u.fds, 32);
  assert.equal(u.settle(0), 16, "the held reply is not in the kernel's count yet");
  u.hold(-16);
  u.sentReply(100, 16);
  assert.equal(u.settle(300), 16);
  assert.equal(u.settle(0), 0);
});

test("remembered replies stay bounded by what may be unread (fd-less ones merge)", () => {
  const u = new UnreadReplies();
  // With no reply with fds before them, fd-less replies are not remembered at all: an idle
  // connection whose replies carried no fds holds no list (heap profile of 2,000 idle sessions).
  for (let i = 0; i < 10_000; i++) u.sentReply(40, 0);
  assert.equal(u.length, 0);
  assert.ok(u.outq >= 10_000 * 40, "their bytes still count towards outq");
  u.sentReply(1000, 1);
  for (let i = 0; i < 10_000; i++) u.sentReply(40, 0);
  assert.equal(u.length, 2, "after a reply with fds they merge into one");
  assert.equal(u.settle(100), 0, "the fd reply is read: 10,000 x 40 bytes came after it");
  assert.equal(u.length, 0, "what is left without fds is dropped");
  for (let i = 0; i < 100; i++) u.sentReply(1000, 1);
  u.settle(5000);
  assert.ok(u.length <= 5, `${u.length} replies remembered`);
  assert.equal(u.fds, 5);
});

test("a reply sendmsg refused whole is forgotten, so it cannot make an older unread reply look read", () => {
  const u = new UnreadReplies();
  u.sentReply(100, 16); // unread, in the kernel: SIOCOUTQ 100
  u.sentReply(100, 16); // refused by sendmsg (ETOOMANYREFS): never in the kernel
  u.unsent(100, 16);
  assert.equal(u.settle(100), 16, "the first reply is still unread");
  u.unsent(100, 0); // fd-less replies are never refused for their fds: nothing forgotten
  assert.equal(u.fds, 16);
});

test("property: outq (what the transport reads without asking the kernel) is never below SIOCOUTQ now", () => {
  fc.assert(
    fc.property(
      fc.array(reply, { maxLength: 30 }),
      fc.array(reply, { maxLength: 30 }),
      fc.nat(),
      (before, after, cut) => {
        const u = new UnreadReplies();
        for (const r of before) u.sentReply(r.bytes, r.fds);
        const read = before.length === 0 ? 0 : cut % (before.length + 1);
        const kernel = (rs: typeof before) => rs.reduce((a, r) => a + r.bytes + r.overhead, 0);
        u.settle(kernel(before.slice(read)));
        assert.equal(u.outq, kernel(before.slice(read)), "exact right after asking");
        // More replies go out; the peer reads nothing more: the kernel's figure only grows by them.
        for (const r of after) u.sentReply(r.bytes, r.fds);
        const now = kernel(before.slice(read)) + kernel(after);
        assert.ok(u.outq >= now, `outq ${u.outq} < ${now} bytes unread`);
      },
    ),
  );
});

test("property: nothing is remembered while no reply with fds may be unread", () => {
  const op = fc.oneof(
    reply.map((r) => ({ kind: "sent" as const, ...r })),
    fc.nat({ max: 20_000 }).map((outq) => ({ kind: "settle" as const, outq })),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
      const u = new UnreadReplies();
      for (const o of ops) {
        if (o.kind === "sent") u.sentReply(o.bytes, o.fds);
        else u.settle(o.outq);
        if (u.fds === 0) assert.equal(u.length, 0, "an fd-less list kept");
      }
    }),
  );
});
