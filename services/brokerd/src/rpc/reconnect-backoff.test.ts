// ReconnectBackoff on an injected clock: the wait doubles per strike up to maxMs, ends when it
// says, is forgotten after forgetMs of quiet, and the map never holds more than maxKeys.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ReconnectBackoff } from "./reconnect-backoff.js";

const opts = { baseMs: 1000, maxMs: 60_000, forgetMs: 300_000, maxKeys: 8 };

test("ReconnectBackoff: 1 s, 2 s, 4 s ... up to the bound, and forgotten after a quiet period", () => {
  const b = new ReconnectBackoff(opts);
  assert.equal(b.remaining(7, 0), 0);
  let now = 0;
  const waits: number[] = [];
  for (let i = 0; i < 9; i++) {
    // Strikes 100 s apart: each after the last wait ended, none forgotten (forgetMs 300 s).
    now += 100_000;
    waits.push(b.strike(7, now, "rapid reset"));
  }
  assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
  assert.equal(b.reason(7), "rapid reset");
  assert.equal(b.remaining(7, now + 59_999), 1);
  assert.equal(b.remaining(7, now + 60_000), 0);
  assert.equal(b.strikes(7, now + 299_999), 9);
  assert.equal(b.remaining(7, now + 300_000), 0);
  assert.equal(b.strikes(7, now + 300_000), 0);
  assert.equal(b.strike(7, now + 300_000), 1000, "a forgotten key starts again from baseMs");
  assert.equal(b.remaining(8, now), 0, "other keys are not affected");
});

test("ReconnectBackoff: a strike never shortens a wait, waits stay within [baseMs, maxMs], memory bounded", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 120_000 }), fc.boolean()),
        {
          maxLength: 300,
        },
      ),
      (ops) => {
        const b = new ReconnectBackoff(opts);
        let now = 0;
        for (const [key, dt, strike] of ops) {
          now += dt;
          const before = b.remaining(key, now);
          if (strike) {
            const wait = b.strike(key, now);
            assert.ok(wait >= before, `a strike shortened ${before} to ${wait}`);
            assert.ok(wait >= opts.baseMs && wait <= opts.maxMs, `wait ${wait}`);
            assert.equal(b.remaining(key, now), wait);
          } else assert.ok(before <= opts.maxMs);
          assert.ok(b.size <= opts.maxKeys, `size ${b.size}`);
        }
      },
    ),
  );
});

test("keyed by tenant: one user's strike holds back every uid the server maps to that tenant", () => {
  const b = new ReconnectBackoff();
  const tenantOf = (uid: number) => (uid >= 100_000 && uid < 165_536 ? "user:alice" : `uid:${uid}`);
  b.strike(tenantOf(100_001), 0, "resets");
  assert.equal(
    b.remaining(tenantOf(100_002), 500),
    500,
    "another uid of alice's subordinate range waits too",
  );
  assert.equal(b.remaining(tenantOf(4242), 500), 0, "another user does not");
  assert.equal(b.reason(tenantOf(165_535)), "resets");
});
