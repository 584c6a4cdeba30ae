// QuotaBook against a model: random charges and refunds over a few keys never let any key go over
// its limit, a refused charge changes nothing, and a book whose charges were all refunded is empty.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { BrokerError } from "../errors.js";
import { QuotaBook } from "./quota.js";

const KEYS = [["uid:1"], ["uid:2"], ["uid:1", "container:c"], ["uid:2", "container:c"]] as const;

test("QuotaBook: no key ever exceeds its limit, refusals charge nothing, refunds empty the book", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(KEYS.length - 1), fc.integer({ min: 1, max: 4 }), fc.boolean()), {
        maxLength: 200,
      }),
      fc.integer({ min: 1, max: 10 }),
      (ops, limit) => {
        const book = new QuotaBook();
        const model = new Map<string, number>();
        const charged: { keys: readonly string[]; n: number }[] = [];
        for (const [ki, n, refund] of ops) {
          const keys = KEYS[ki]!;
          if (refund && charged.length > 0) {
            const c = charged.pop()!;
            book.refund(c.keys, "mappings", c.n);
            for (const k of c.keys) model.set(k, (model.get(k) ?? 0) - c.n);
            continue;
          }
          const fits = keys.every((k) => (model.get(k) ?? 0) + n <= limit);
          try {
            book.charge(keys, "mappings", n, limit, "uid 1");
            assert.ok(fits, "a charge over the limit was accepted");
            for (const k of keys) model.set(k, (model.get(k) ?? 0) + n);
            charged.push({ keys, n });
          } catch (e) {
            assert.ok(e instanceof BrokerError && e.code === "RESOURCE_EXHAUSTED");
            assert.ok(!fits, "a charge within the limit was refused");
          }
          for (const [k, v] of model) assert.equal(book.usage(k).mappings, v);
        }
        for (const c of charged.reverse()) book.refund(c.keys, "mappings", c.n);
        assert.equal(book.size, 0);
      },
    ),
  );
});

test("QuotaBook: bytes are bigint, and the message says who, what and what to do", () => {
  const book = new QuotaBook();
  book.charge(["uid:7"], "bytes", 1n << 30n, 1n << 30n, "uid 7");
  assert.throws(
    () => book.charge(["uid:7"], "bytes", 4096n, 1n << 30n, "uid 7"),
    (e: BrokerError) =>
      e.code === "RESOURCE_EXHAUSTED" &&
      e.reason === "limit:bytes" &&
      /uid 7 has 1 GiB mapped of the 1 GiB its quota allows \(this request adds 4 KiB\)/.test(e.message) &&
      /across all of its sessions/.test(e.message),
  );
  assert.throws(
    () => book.charge(["uid:8", "container:abc"], "sessions", 1, 0, "uid 8"),
    /the container of uid 8|uid 8 has 0 sessions/,
  );
  book.refund(["uid:7"], "bytes", 1n << 30n);
  assert.equal(book.size, 0);
});
