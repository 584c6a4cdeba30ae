// TicketBook: what it answers for live, used, expired and revoked tickets, and the bound on spent
// tickets it remembers (a grant/release loop cannot grow it), against a model under any sequence.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { TicketBook } from "./tickets.js";

const holder = { sessionId: "s", uid: 1000, pid: 42 };
const mine = (h: { pid: number }) => h.pid === 42;

test("a used ticket answers already_used while remembered; the oldest spent beyond the bound answer unknown", () => {
  const book = new TicketBook<number>(10_000, 60_000, Date.now, 3);
  const ids = [1, 2, 3, 4, 5].map((m) => book.issue(m, holder).ticket);
  for (const id of ids) assert.ok(book.redeem(id, mine).ok);
  const why = (id: string) => {
    const r = book.redeem(id, mine);
    return r.ok ? "ok" : r.why;
  };
  assert.deepEqual(ids.map(why), ["unknown", "unknown", "already_used", "already_used", "already_used"]);
  assert.equal(book.size, 3);
});

test("property: live tickets are never forgotten early; the book holds at most its live ones plus the spent bound", () => {
  const MAX = 8;
  type Op =
    | { k: "issue" }
    | { k: "redeem"; i: number }
    | { k: "revoke"; i: number }
    | { k: "tick"; ms: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.constant({ k: "issue" as const }),
    fc.record({ k: fc.constant("redeem" as const), i: fc.nat(40) }),
    fc.record({ k: fc.constant("revoke" as const), i: fc.nat(40) }),
    fc.record({ k: fc.constant("tick" as const), ms: fc.integer({ min: 0, max: 400 }) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
      let now = 0;
      const book = new TicketBook<number>(1000, 500, () => now, MAX);
      const issued: { id: string; expiresAt: number; live: boolean }[] = [];
      for (const o of ops) {
        if (o.k === "issue") {
          const t = book.issue(issued.length, holder);
          issued.push({ id: t.ticket, expiresAt: t.expiresAt, live: true });
        } else if (o.k === "tick") {
          now += o.ms;
          for (const e of book.sweep()) issued[e.mapping]!.live = false;
        } else {
          const t = issued[o.i];
          if (!t) continue;
          if (o.k === "revoke") {
            book.revoke(t.id);
            t.live = false;
            continue;
          }
          const r = book.redeem(t.id, mine);
          const expected = t.live && now < t.expiresAt;
          assert.equal(r.ok, expected, `redeem of ticket ${o.i}`);
          if (!r.ok) assert.notEqual(r.why, "wrong_peer");
          t.live = false;
        }
        const live = issued.filter((t) => t.live && now < t.expiresAt);
        for (const t of live) assert.ok(book.isLive(t.id), "a live ticket is still live");
        assert.ok(book.size <= issued.filter((t) => t.live).length + MAX, "spent tickets are bounded");
      }
    }),
  );
});
