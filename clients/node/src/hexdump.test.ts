import assert from "node:assert/strict";
import { test } from "node:test";
import { hexdump, hexdumpLine } from "./hexdump.js";

test("hexdumpLine: a full line", () => {
  const data = Buffer.from("000102030405060708090a0b0c0d0e0f", "hex");
  assert.equal(
    hexdumpLine(data, 0x10),
    "0x00000010  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f  |................|",
  );
});

test("hexdumpLine: printable ASCII and a short line keeps the columns aligned", () => {
  const full = hexdumpLine(Buffer.from("Hello, world!!!!"), 0);
  const short = hexdumpLine(Buffer.from("Hi"), 0);
  assert.equal(short, "0x00000000  48 69                                             |Hi|");
  assert.equal(full.indexOf("|"), short.indexOf("|"));
  assert.ok(full.endsWith("|Hello, world!!!!|"));
});

test("hexdump: splits into 16-byte lines with running addresses; bigint bases; empty input", () => {
  const lines = hexdump(new Uint8Array(40).fill(0xff), 0x1000);
  assert.equal(lines.length, 3);
  assert.ok(lines[0]!.startsWith("0x00001000  ff"));
  assert.ok(lines[1]!.startsWith("0x00001010  ff"));
  assert.ok(lines[2]!.startsWith("0x00001020  ff ff ff ff ff ff ff ff    "));
  assert.ok(hexdump(new Uint8Array(1), 1n << 40n)[0]!.startsWith("0x10000000000  00"));
  assert.deepEqual(hexdump(new Uint8Array(0)), []);
});
