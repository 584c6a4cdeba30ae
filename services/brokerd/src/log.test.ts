// Tests for the rate-limited operator log: perKey lines per key per interval, then one line with
// the count suppressed; keys are independent; the key table is bounded. The clock is the test's.
import assert from "node:assert/strict";
import { test } from "node:test";
import { RateLimitedLog } from "./log.js";

function setup(opts: { perKey?: number; maxKeys?: number } = {}) {
  const clock = { now: 0 };
  const out: string[] = [];
  const log = new RateLimitedLog({
    perKey: 2,
    intervalMs: 60_000,
    clock: () => clock.now,
    sink: (l) => out.push(l),
    timer: false,
    ...opts,
  });
  return { clock, out, log };
}

test("at most perKey lines per key per interval, then the count of the rest once the interval is over", () => {
  const { clock, out, log } = setup();
  for (let i = 0; i < 1000; i++) log.log("rpc.internal-error", `error ${i}`);
  assert.deepEqual(out, ["error 0", "error 1"]);
  clock.now += 59_999;
  log.flush();
  assert.equal(out.length, 2, "the interval is not over yet");
  clock.now += 1;
  log.flush();
  assert.deepEqual(out.slice(2), [
    'vfio-brokerd: 998 more "rpc.internal-error" message(s) suppressed in the last 60 s',
  ]);
  log.log("rpc.internal-error", "again");
  assert.equal(out.at(-1), "again", "a new interval prints again");
});

test("the summary also comes when the key logs again after the interval, without flush()", () => {
  const { clock, out, log } = setup({ perKey: 1 });
  log.log("k", "a");
  log.log("k", "b");
  clock.now += 61_000;
  log.log("k", "c");
  assert.deepEqual(out, ["a", 'vfio-brokerd: 1 more "k" message(s) suppressed in the last 61 s', "c"]);
});

test("keys are independent; nothing suppressed, nothing reported", () => {
  const { clock, out, log } = setup();
  log.log("a", "a1");
  log.log("b", "b1");
  log.log("a", "a2");
  clock.now += 60_000;
  log.flush();
  assert.deepEqual(out, ["a1", "b1", "a2"]);
});

test("the key table is bounded: new keys beyond maxKeys share 'other'", () => {
  const { out, log } = setup({ perKey: 1, maxKeys: 3 });
  for (let i = 0; i < 100; i++) log.log(`key-${i}`, `m${i}`);
  assert.deepEqual(out, ["m0", "m1", "m2", "m3"]);
});
