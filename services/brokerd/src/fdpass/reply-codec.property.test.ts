// The hand-written grant and release replies against protobuf-es: for any FdReply without items,
// encodeWorkloadFdReply gives the very bytes protobuf-es gives for the same WorkloadReply, and
// protobuf-es reads them back to the same message.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FdStatus, WorkloadReplySchema } from "@vfio-broker/proto";
import fc from "fast-check";
import type { FdReplyInit } from "./adapter.js";
import { encodeWorkloadFdReply } from "./reply-codec.js";

const u64 = fc.oneof(
  fc.constant(0n),
  fc.bigInt({ min: 0n, max: 2n ** 20n }),
  fc.bigInt({ min: 2n ** 52n, max: 2n ** 54n }),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);
const u32 = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 0, max: 300 }),
  fc.integer({ min: 0, max: 2 ** 32 - 1 }),
);
const small = fc.integer({ min: 0, max: 8 });
const text = fc.oneof(
  fc.constant(""),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
);

const reply: fc.Arbitrary<FdReplyInit> = fc.record({
  status: fc.constant(FdStatus.OK),
  message: text,
  cookie: u64,
  mmapOffset: u64,
  length: u64,
  prot: small,
  effectiveAttribute: small,
  backing: small,
  grpcCode: text,
  regionIndex: u32,
  regionOffset: u64,
  fallbackReason: text,
  requestedAttribute: small,
  refs: u32,
});

test("grant and release replies: the same bytes as protobuf-es", () => {
  fc.assert(
    fc.property(fc.constantFrom("grant" as const, "release" as const), reply, (k, r) => {
      const fast = encodeWorkloadFdReply(k, r);
      assert.ok(fast, "encoded");
      const want = toBinary(
        WorkloadReplySchema,
        create(WorkloadReplySchema, { status: FdStatus.OK, kind: { case: k, value: r } }),
      );
      assert.deepEqual(Buffer.from(fast), Buffer.from(want));
      const back = fromBinary(WorkloadReplySchema, fast);
      assert.equal(back.kind.case, k);
    }),
    { numRuns: 2000 },
  );
});

test("a reply with items, or strings too long for the scratch buffer, is left to protobuf-es", () => {
  assert.equal(
    encodeWorkloadFdReply("grant", { status: FdStatus.OK, items: [{ status: FdStatus.OK }] }),
    undefined,
  );
  assert.equal(
    encodeWorkloadFdReply("grant", { status: FdStatus.OK, fallbackReason: "x".repeat(400) }),
    undefined,
  );
});
