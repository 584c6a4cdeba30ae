// TokenBucket on an injected clock: never more than burst + rate x elapsed taken, a refused take
// takes nothing, and it refills to the burst and no further.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { TokenBucket } from "./token-bucket.js";

test("TokenBucket: what is taken never exceeds burst + perSecond x elapsed", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 100 }),
      fc.integer({ min: 0, max: 50 }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 1, max: 5 })), {
        maxLength: 300,
      }),
      (burst, perSecond, steps) => {
        let now = 1_000_000;
        const b = new TokenBucket(burst, perSecond, now);
        let taken = 0;
        for (const [dt, n] of steps) {
          now += dt;
          if (b.take(now, n)) taken += n;
          assert.ok(taken <= burst + (perSecond * (now - 1_000_000)) / 1000 + 1e-9);
        }
      },
    ),
  );
});

test("TokenBucket: a burst, then refusals, then the rate", () => {
  const b = new TokenBucket(64, 4, 0);
  for (let i = 0; i < 64; i++) assert.ok(b.take(0));
  assert.equal(b.take(0), false);
  assert.equal(b.take(200), false); // 0.8 of a token
  assert.ok(b.take(250));
  assert.equal(b.take(250), false);
  // A long quiet period refills to the burst, not beyond.
  let n = 0;
  while (b.take(1_000_000)) n++;
  assert.equal(n, 64);
});
