// FairShare against a model: for any cap, reserve and minimum, and any sequence of takes and gives
// by any tenants, each guarantee written at the top of fair-share.ts holds after every step.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { explainRefusal, FairShare } from "./fair-share.js";

type Op = { kind: "acquire" | "release"; tenant: number; n: number };

const op = (tenants: number): fc.Arbitrary<Op> =>
  fc.record({
    kind: fc.constantFrom("acquire", "acquire", "acquire", "release") as fc.Arbitrary<Op["kind"]>,
    tenant: fc.integer({ min: 0, max: tenants - 1 }),
    n: fc.integer({ min: 1, max: 3 }),
  });

const params = fc.record({
  cap: fc.integer({ min: 1, max: 64 }),
  reservePart: fc.integer({ min: 0, max: 64 }),
  minimum: fc.integer({ min: 0, max: 4 }),
  tenants: fc.integer({ min: 1, max: 40 }),
});

test("FairShare: every guarantee holds after every step of any sequence", () => {
  fc.assert(
    fc.property(
      params.chain((p) => fc.tuple(fc.constant(p), fc.array(op(p.tenants), { maxLength: 400 }))),
      ([p, ops]) => {
        const reserve = Math.min(p.reservePart, p.cap);
        const pool = new FairShare(p.cap, reserve, p.minimum);
        const G = p.minimum;
        const model = new Map<string, number>();
        const h = (t: string) => model.get(t) ?? 0;
        const sum = (f: (x: number) => number) => [...model.values()].reduce((a, x) => a + f(x), 0);
        for (const o of ops) {
          const t = `t${o.tenant}`;
          if (o.kind === "release") {
            pool.release(t, o.n);
            const left = Math.max(0, h(t) - o.n);
            if (left === 0) model.delete(t);
            else model.set(t, left);
          } else {
            const before = h(t);
            const total = sum((x) => x);
            const minimums = sum((x) => Math.min(x, G));
            const activeAfter = model.size + (before === 0 ? 1 : 0);
            const share = Math.max(G, Math.floor((p.cap - reserve) / activeAfter));
            const v = pool.acquire(t);
            assert.equal(v.held, before);
            assert.equal(v.share, share);
            if (v.ok) model.set(t, before + 1);
            // 3. Under its minimum: refused only when R units are held as minimums (all taken).
            if (before < G && !v.ok) {
              assert.equal(total, p.cap);
              assert.ok(minimums >= reserve, `refused below minimum with ${minimums} < R ${reserve}`);
            }
            if (before < G && activeAfter * G <= reserve) assert.ok(v.ok, "a tenant within R/G was refused");
            // 4. Room outside the reserve and under its share: granted.
            if (total < p.cap - reserve && before < share) assert.ok(v.ok);
            // 5. Above its minimum, never beyond the share of the moment.
            if (v.ok && before >= G) assert.ok(before + 1 <= share);
            if (!v.ok) assert.ok(v.why === "share" ? before >= share : before < share);
          }
          // 1. The total is the sum, never over the cap; 2. the units above minimums fit in C - R.
          const total = sum((x) => x);
          assert.equal(pool.total, total);
          assert.ok(total <= p.cap);
          assert.ok(sum((x) => Math.max(0, x - G)) <= p.cap - reserve);
          assert.equal(pool.active, model.size);
          for (const [k, x] of model) assert.equal(pool.heldBy(k), x);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test("FairShare: with floor(R/G) tenants or fewer, each gets its minimum whatever the others took first", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 200 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 50 }),
      (cap, G, percent) => {
        const reserve = Math.floor((cap * percent) / 100);
        const n = Math.floor(reserve / G);
        if (n < 1) return;
        const pool = new FairShare(cap, reserve, G);
        // n - 1 greedy tenants take all they can, in turns; then the last one comes.
        for (let round = 0; round < cap; round++) for (let t = 0; t < n - 1; t++) pool.acquire(`greedy${t}`);
        for (let k = 0; k < G; k++) assert.ok(pool.acquire("late").ok, `late tenant got only ${k} of ${G}`);
      },
    ),
  );
});

test("FairShare: restore books past the cap; the guarantees hold again once it is given back", () => {
  const pool = new FairShare(10, 4, 2);
  pool.restore("a", 12);
  assert.equal(pool.total, 12);
  assert.equal(pool.acquire("b").ok, false);
  pool.release("a", 12);
  assert.equal(pool.total, 0);
  pool.release("a", 5);
  assert.equal(pool.total, 0);
  assert.equal(pool.acquire("b").ok, true);
});

test("FairShare: the messages say which tenant, its share, and what to do", () => {
  const pool = new FairShare(8, 4, 1);
  for (let i = 0; i < 4; i++) pool.acquire("a");
  const share = pool.acquire("a");
  assert.equal(share.ok, false);
  assert.equal(
    explainRefusal(
      pool,
      share,
      "tenant of uid 60000 (subuid range of alice)",
      "sessions",
      "close a connection first",
    ),
    "tenant of uid 60000 (subuid range of alice) holds 4 of its 4 sessions: brokerd's 8 are shared by 1 active tenant (4 kept for tenants holding fewer than 1); close a connection first",
  );
  pool.acquire("b");
  const full = pool.acquire("b");
  assert.equal(full.why, "full");
  assert.match(
    explainRefusal(pool, full, "tenant of uid 4242", "sessions", "close a connection first"),
    /^tenant of uid 4242 holds 1 sessions and brokerd's shared sessions are all taken \(5 of 8 held by 2 active tenants/,
  );
});
