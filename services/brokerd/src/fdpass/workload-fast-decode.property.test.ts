// The wire reader of plain grants and releases (fdpass/workload-fast-decode.ts), property-tested
// against the general decode (protobuf-es and the string walk, workload-decode.ts decodeGeneral):
// whatever it answers for is exactly what the general decode gives for the same bytes; a grant or
// release as clients encode it (any field values, strings within their limits) is answered by it;
// and every other frame (random bytes, big numbers, bad strings, extra fields) is left to the
// general decode, so its meaning and its error message do not change.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { WorkloadRequestSchema } from "@vfio-broker/proto";
import fc from "fast-check";
import { decodeGeneral, decodeRequest } from "./workload-decode.js";
import { fastRequest } from "./workload-fast-decode.js";

const u64 = fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 20n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
const hexToken = fc.oneof(fc.stringMatching(/^[0-9a-f]{0,32}$/), fc.string({ maxLength: 40 }));
const requestId = fc.oneof(fc.stringMatching(/^[A-Za-z0-9._:-]{0,64}$/), fc.string({ maxLength: 70 }));
const enumValue = fc.oneof(fc.integer({ min: 0, max: 4 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));

const grant = fc.record({
  sessionToken: hexToken,
  deviceFileId: u64,
  regionIndex: fc.oneof(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 0xffffffff })),
  offset: u64,
  length: u64,
  attribute: enumValue,
  prot: enumValue,
  allowFallback: fc.boolean(),
  requestId,
});
const release = fc.record({ sessionToken: hexToken, deviceFileId: u64, cookie: u64 });

const encoded = fc.oneof(
  grant.map((value) =>
    toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, { kind: { case: "grant", value } })),
  ),
  release.map((value) =>
    toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, { kind: { case: "release", value } })),
  ),
);

/** The reader's answer, when it gives one, is the general decode's. */
function agrees(b: Uint8Array): boolean {
  const fast = fastRequest(b);
  if (fast) assert.deepStrictEqual({ ok: true, kind: fast }, decodeGeneral(b));
  assert.deepStrictEqual(decodeRequest(b), decodeGeneral(b));
  return fast !== undefined;
}

test("an encoded grant or release: the same request as the general decode, read off the wire when its strings fit", () => {
  fc.assert(
    fc.property(encoded, (b) => {
      const read = agrees(b);
      const g = decodeGeneral(b);
      // Every valid one with small numbers (what clients send) is the reader's.
      if (g.ok && (g.kind.case === "grant" || g.kind.case === "release")) {
        const v = g.kind.value as unknown as Record<string, unknown>;
        const small = Object.values(v).every(
          (x) =>
            (typeof x !== "bigint" || x < 2n ** 49n) && (typeof x !== "number" || (x >= 0 && x < 2 ** 31)),
        );
        if (small) assert.ok(read, "a plain request within every limit is read off the wire");
      }
    }),
    { numRuns: 20_000 },
  );
});

test("any bytes, or an encoded request cut, extended or altered: the reader answers only as the general decode would", () => {
  const mutated = fc
    .tuple(encoded, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom("cut", "append", "flip"))
    .map(([b, i, x, how]) => {
      const c = Uint8Array.from(b);
      if (how === "cut") return c.subarray(0, i % (c.length + 1));
      if (how === "append") return Uint8Array.from([...c, x, i & 0xff]);
      if (c.length > 0) c[i % c.length] = x;
      return c;
    });
  fc.assert(
    fc.property(fc.oneof(mutated, fc.uint8Array({ maxLength: 200 })), (b) => void agrees(b)),
    { numRuns: 30_000 },
  );
});
