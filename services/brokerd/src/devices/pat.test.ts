// Tests for pat.ts: parsing debugfs x86/pat_memtype_list (both formats) and range queries.
import assert from "node:assert/strict";
import { test } from "node:test";
import { attributeOfPatType, parsePatMemtypeList, patEntriesIn, patTypesIn, verdict } from "./pat.js";

// As the guest kernel (6.1) printed it with resource2_wc and a VFIO mapping of ivshmem BAR2 live.
const LIST = `PAT memtype list:
PAT: [mem 0x00000000fe000000-0x00000000fe400000] write-combining
PAT: [mem 0x00000000fe800000-0x00000000fe900000] write-combining
PAT: [mem 0x00000000fe800000-0x00000000fe900000] uncached-minus
PAT: [mem 0x00000000fed00000-0x00000000fed01000] uncached-minus
garbage line
`;

test("parses the current format and skips the header", () => {
  const e = parsePatMemtypeList(LIST);
  assert.equal(e.length, 4);
  assert.deepEqual(e[1], { start: 0xfe800000n, end: 0xfe900000n, type: "write-combining" });
});

test("parses the pre-5.8 format", () => {
  const e = parsePatMemtypeList("uncached-minus @ 0xfe800000-0xfe900000\nwrite-back @ 0x1000-0x2000\n");
  assert.deepEqual(e, [
    { start: 0xfe800000n, end: 0xfe900000n, type: "uncached-minus" },
    { start: 0x1000n, end: 0x2000n, type: "write-back" },
  ]);
});

test("range queries use the exclusive end", () => {
  const e = parsePatMemtypeList(LIST);
  assert.deepEqual(patTypesIn(e, 0xfe800000n, 0x1000n), ["write-combining", "uncached-minus"]);
  assert.deepEqual(patTypesIn(e, 0xfe900000n, 0x1000n), [], "the end is exclusive");
  assert.deepEqual(patTypesIn(e, 0xfe7ff000n, 0x1000n), []);
  assert.equal(patEntriesIn(e, 0xfe000000n, 0x900000n).length, 3);
});

test("verdict: every booked type must realize the expected attribute", () => {
  const wcOnly = parsePatMemtypeList("PAT: [mem 0x00000000fe800000-0x00000000fe900000] write-combining");
  assert.deepEqual(verdict(wcOnly, 0xfe800000n, 0x100000n, "WC"), {
    patTypes: ["write-combining"],
    matches: true,
  });
  assert.equal(verdict(wcOnly, 0xfe800000n, 0x100000n, "UC").matches, false);
  assert.equal(verdict(parsePatMemtypeList(LIST), 0xfe800000n, 0x1000n, "WC").matches, false, "mixed types");
  assert.equal(verdict([], 0n, 1n, "UC").matches, false, "nothing booked is not a match");
  assert.equal(attributeOfPatType("uncached"), "UC");
  assert.equal(attributeOfPatType("uncached-minus"), "UC");
  assert.equal(attributeOfPatType("write-through"), undefined);
});
