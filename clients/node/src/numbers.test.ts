import assert from "node:assert/strict";
import { test } from "node:test";
import { formatSize, hex, parseHexBytes, parseNumber, parseSmallNumber } from "./numbers.js";

test("parseNumber: decimal, hex and K/M/G (KiB) suffixes", () => {
  assert.equal(parseNumber("0"), 0n);
  assert.equal(parseNumber("4096"), 4096n);
  assert.equal(parseNumber("0x1000"), 4096n);
  assert.equal(parseNumber("0X1000"), 4096n);
  assert.equal(parseNumber("4K"), 4096n);
  assert.equal(parseNumber("4k"), 4096n);
  assert.equal(parseNumber("4KiB"), 4096n);
  assert.equal(parseNumber("1M"), 1048576n);
  assert.equal(parseNumber("16MiB"), 16n << 20n);
  assert.equal(parseNumber("2G"), 2n << 30n);
  assert.equal(parseNumber("0x10K"), 16n * 1024n);
  assert.equal(parseNumber(" 8 "), 8n);
  assert.equal(parseNumber("0xffffffffffffffff"), (1n << 64n) - 1n);
});

test("parseNumber: rejects what is not a whole non-negative number, saying what would be accepted", () => {
  for (const bad of ["", "-1", "1.5", "abc", "0x", "4T", "4KB", "1e3", "0b101", "K"]) {
    assert.throws(
      () => parseNumber(bad, "--offset"),
      (e: Error) => {
        assert.ok(e instanceof RangeError);
        assert.match(e.message, /^--offset /);
        assert.match(e.message, /decimal \(4096\), hex \(0x1000\) or a K\/M\/G suffix/);
        return true;
      },
    );
  }
  assert.throws(() => parseNumber("0x10000000000000000"), /does not fit in 64 bits/);
  assert.throws(() => parseSmallNumber("0x20000000000000"), /too large/);
  assert.equal(parseSmallNumber("4K"), 4096);
});

test("parseHexBytes: memory order, optional 0x and separators", () => {
  assert.deepEqual([...parseHexBytes("deadbeef")], [0xde, 0xad, 0xbe, 0xef]);
  assert.deepEqual([...parseHexBytes("0xDEADBEEF")], [0xde, 0xad, 0xbe, 0xef]);
  assert.deepEqual([...parseHexBytes("de:ad be_ef")], [0xde, 0xad, 0xbe, 0xef]);
  assert.throws(
    () => parseHexBytes("abc"),
    /odd number of hex digits; give whole bytes \(e\.g\. 0abc or abc0\)/,
  );
  assert.throws(() => parseHexBytes("zz"), /is not hex/);
  assert.throws(() => parseHexBytes(""), /is empty/);
  assert.throws(() => parseHexBytes("0x"), /is empty/);
});

test("formatSize and hex", () => {
  assert.equal(formatSize(0n), "0 B");
  assert.equal(formatSize(100n), "100 B");
  assert.equal(formatSize(4096n), "4 KiB");
  assert.equal(formatSize(6144n), "6 KiB");
  assert.equal(formatSize(4097n), "4097 B");
  assert.equal(formatSize(16n << 20n), "16 MiB");
  assert.equal(formatSize(1n << 30n), "1 GiB");
  assert.equal(hex(0n), "0x0");
  assert.equal(hex(4096), "0x1000");
});
