// Repeats keeps the audit truthful: for any sequence of events, budgets, times and flushes, the
// full lines plus the counts of every summary are exactly the events seen, per key; no window ever
// writes more full lines than its budget; the details tallied add up to the count.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { keyOf, MAX_DETAILS, Repeats, type Summary, uidKeyOf } from "./aggregate.js";

const step = fc.oneof(
  fc.record({
    kind: fc.constant("see" as const),
    event: fc.constantFrom("mapping.grant", "mapping.release", "fd.delivery"),
    uid: fc.integer({ min: 0, max: 5 }),
    detail: fc.integer({ min: 0, max: 40 }),
    dt: fc.integer({ min: 0, max: 700 }),
  }),
  fc.record({ kind: fc.constant("flush" as const), dt: fc.integer({ min: 0, max: 3000 }) }),
);

test("property: full lines + summary counts = events, per event and uid; budgets hold", () => {
  fc.assert(
    fc.property(
      fc.array(step, { maxLength: 400 }),
      fc.integer({ min: 1, max: 10 }),
      fc.constantFrom(0, 500, 1000),
      fc.integer({ min: 2, max: 50 }),
      (steps, budget, reportMs, maxKeys) => {
        const r = new Repeats({ windowMs: 10_000, maxKeys });
        let now = 0;
        const seen = new Map<string, number>();
        const full = new Map<string, number>();
        const summaries: Summary[] = [];
        let overflow = 0;
        for (const s of steps) {
          now += s.dt;
          if (s.kind === "flush") {
            summaries.push(...r.flush(now));
            continue;
          }
          const key = `${s.event} ${s.uid}`;
          seen.set(key, (seen.get(key) ?? 0) + 1);
          const out = r.see(s.event, { uid: s.uid }, 7, now, { budget, detail: `d${s.detail}`, reportMs });
          if (out.closed) summaries.push(out.closed);
          if (out.full) full.set(key, (full.get(key) ?? 0) + 1);
        }
        summaries.push(...r.flush(now, true));
        const counted = new Map<string, number>();
        for (const s of summaries) {
          if (s.event === "suppressed.other") {
            overflow += s.count;
            continue;
          }
          const key = `${s.event.replace(/\.suppressed$/, "")} ${s.uid}`;
          counted.set(key, (counted.get(key) ?? 0) + s.count);
          if (s.details) {
            const d = s.details as Record<string, number>;
            assert.equal(
              Object.values(d).reduce((a, b) => a + b, 0),
              s.count,
              "details add up to the count",
            );
            assert.ok(Object.keys(d).length <= MAX_DETAILS + 1);
          }
        }
        let total = 0;
        for (const [key, n] of seen) {
          total += n;
          assert.ok((full.get(key) ?? 0) <= n);
          // Whatever went to the overflow bucket is counted there, per event.
          assert.ok((full.get(key) ?? 0) + (counted.get(key) ?? 0) <= n, key);
        }
        const accounted =
          [...full.values()].reduce((a, b) => a + b, 0) +
          [...counted.values()].reduce((a, b) => a + b, 0) +
          overflow;
        assert.equal(accounted, total, "every event is a full line or counted in a summary");
      },
    ),
  );
});

test("a window writes at most its budget of full lines, whatever the rate", () => {
  const r = new Repeats({ windowMs: 10_000, maxKeys: 16 });
  let full = 0;
  for (let i = 0; i < 100_000; i++)
    if (r.see("mapping.grant", { uid: 1 }, 1, i / 10, { budget: 64 }).full) full++;
  assert.equal(full, 64);
});

test("a churn event's key (uidKeyOf) is the key of its fields ({ uid }), for any uid", () => {
  for (const uid of [0, 1000, 65534, 4294967295, -1, 1.5, "other", 'a"b', "1000"])
    assert.equal(uidKeyOf("mapping.grant", uid), keyOf("mapping.grant", { uid }), String(uid));
  // So the same uid is one window whichever way its key was made.
  const r = new Repeats({ windowMs: 1000, maxKeys: 8 });
  assert.equal(r.see("e", { uid: 7 }, 1, 0).full, true);
  assert.equal(r.see("e", { uid: 7 }, 1, 1, { key: uidKeyOf("e", 7) }).full, false);
  assert.equal(r.size, 1);
});
