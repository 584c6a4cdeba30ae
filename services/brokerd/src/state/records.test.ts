// The state records' CRC as written: hex8 is exactly toString(16) padded to 8 digits for every
// unsigned 32-bit value (the format of every record line and snapshot header on disk).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { hex8 } from "./records.js";

test("hex8 is the 8-digit lower-case hex of any unsigned 32-bit integer", () => {
  for (const n of [0, 1, 0xff, 0x100, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff])
    assert.equal(hex8(n), n.toString(16).padStart(8, "0"));
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => hex8(n) === n.toString(16).padStart(8, "0")),
    { numRuns: 20_000 },
  );
});
