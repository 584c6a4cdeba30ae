import assert from "node:assert/strict";
import { test } from "node:test";
import { type Command, checkOps, parseCli, UsageError } from "./args.js";

function usageError(argv: string[], re: RegExp): void {
  assert.throws(
    () => parseCli(argv),
    (e: Error) => {
      assert.ok(e instanceof UsageError, `expected UsageError, got ${e.name}: ${e.message}`);
      assert.match(e.message, re);
      return true;
    },
  );
}

test("devices and regions", () => {
  assert.deepEqual(parseCli(["devices"]), {
    cmd: "devices",
    json: false,
    socket: undefined,
    fdSocket: undefined,
  });
  assert.deepEqual(parseCli(["--json", "devices", "--socket", "/tmp/b.sock"]), {
    cmd: "devices",
    json: true,
    socket: "/tmp/b.sock",
    fdSocket: undefined,
  });
  const r = parseCli(["regions", "sim0", "--layout", "legacy"]);
  assert.equal(r.cmd, "regions");
  assert.equal((r as Extract<Command, { cmd: "regions" }>).layout, "legacy");
  assert.deepEqual(parseCli(["--help"]), { cmd: "help" });
  assert.deepEqual(parseCli(["map", "-h"]), { cmd: "help" });
});

test("map: defaults", () => {
  const c = parseCli(["map", "sim0", "BAR2"]) as Extract<Command, { cmd: "map" }>;
  assert.equal(c.device, "sim0");
  assert.equal(c.region, "BAR2");
  assert.equal(c.offset, 0n);
  assert.equal(c.length, undefined);
  assert.equal(c.attr, "uc");
  assert.equal(c.prot, "rw");
  assert.equal(c.layout, undefined);
  assert.equal(c.allowFallback, false);
  assert.equal(c.hold, false);
  assert.deepEqual(c.ops, []);
});

test("map: every option; --write/--read keep their command-line order", () => {
  const c = parseCli([
    "map",
    "sim0",
    "2",
    "--offset",
    "4K",
    "--length=0x2000",
    "--attr",
    "WC",
    "--prot",
    "rw",
    "--layout",
    "compact",
    "--allow-fallback",
    "--read",
    "0",
    "--write",
    "0x10=deadbeef",
    "--read",
    "0x10:4",
    "--hold",
    "--json",
  ]) as Extract<Command, { cmd: "map" }>;
  assert.equal(c.offset, 4096n);
  assert.equal(c.length, 8192n);
  assert.equal(c.attr, "wc");
  assert.equal(c.layout, "compact");
  assert.equal(c.allowFallback, true);
  assert.equal(c.hold, true);
  assert.equal(c.json, true);
  assert.deepEqual(c.ops, [
    { kind: "read", offset: 0, length: 16 },
    { kind: "write", offset: 16, data: Buffer.from("deadbeef", "hex") },
    { kind: "read", offset: 16, length: 4 },
  ]);
});

test("argument errors say what to do", () => {
  usageError(
    [],
    /no command given; use devices, regions <dev>, map <dev> <region> or exec <dev> <region> -- PROGRAM/,
  );
  usageError(["frobnicate"], /unknown command "frobnicate"/);
  usageError(["devices", "--bogus"], /unknown option --bogus/);
  usageError(["devices", "extra"], /devices takes no arguments/);
  usageError(["devices", "--offset", "4"], /--offset only applies to the map command/);
  usageError(["regions"], /regions needs exactly one device id/);
  usageError(["map", "sim0"], /map needs a device and a region/);
  usageError(["map", "sim0", "2", "--attr", "wb"], /--attr "wb" is not valid; use uc or wc/);
  usageError(["map", "sim0", "2", "--prot", "w"], /--prot "w" is not valid; use r or ro or rw/);
  usageError(
    ["map", "sim0", "2", "--layout", "dense"],
    /--layout "dense" is not valid; use legacy or compact/,
  );
  usageError(
    ["map", "sim0", "2", "--offset", "-4"],
    /--offset needs a value; to pass one starting with "-", write --offset=VALUE/,
  );
  usageError(["map", "sim0", "2", "--offset=-4"], /--offset "-4" is not a number/);
  usageError(["map", "sim0", "2", "--length", "0"], /--length 0 maps nothing/);
  usageError(["map", "sim0", "2", "--write", "0x10"], /needs OFF=HEX/);
  usageError(["map", "sim0", "2", "--write", "0=xyz"], /--write data "xyz" is not hex/);
  usageError(["map", "sim0", "2", "--read", "0:0"], /reads nothing/);
  usageError(["map", "sim0", "2", "--read", "0:x"], /--read length "x" is not a number/);
  usageError(["map", "sim0", "2", "--prot", "r", "--write", "0=00"], /--write needs a writable mapping/);
  usageError(["map", "sim0", "2", "--offset"], /--offset needs a value/);
  usageError(["devices", "--json=yes"], /--json does not take a value/);
});

test("checkOps: every access must fall inside the mapping", () => {
  checkOps([{ kind: "read", offset: 4080, length: 16 }], 4096n);
  assert.throws(
    () => checkOps([{ kind: "read", offset: 4090, length: 16 }], 4096n),
    /--read at 0xffa \(16 bytes\) is outside the 4096-byte mapping; offsets are relative to the mapping start/,
  );
  assert.throws(
    () => checkOps([{ kind: "write", offset: 4096, data: Buffer.alloc(1) }], 4096n),
    /--write at 0x1000/,
  );
});

test("exec: the device, region and options before --, PROGRAM and its own options after", () => {
  const c = parseCli([
    "exec",
    "sim0",
    "BAR2",
    "--attr",
    "wc",
    "--length",
    "8K",
    "--offset",
    "0x10000",
    "--prot",
    "ro",
    "--on-revoke",
    "term",
    "--socket",
    "/tmp/b.sock",
    "--",
    "prog",
    "--length",
    "1",
    "--",
    "x",
  ]) as Extract<Command, { cmd: "exec" }>;
  assert.equal(c.cmd, "exec");
  assert.deepEqual(
    [c.device, c.region, c.offset, c.length, c.attr, c.prot],
    ["sim0", "BAR2", 0x10000n, 8192n, "wc", "r"],
  );
  assert.equal(c.onRevoke, "SIGTERM");
  assert.equal(c.socket, "/tmp/b.sock");
  assert.equal(c.program, "prog");
  assert.deepEqual(c.args, ["--length", "1", "--", "x"]);
  const d = parseCli(["exec", "sim0", "2", "--", "true"]) as Extract<Command, { cmd: "exec" }>;
  assert.deepEqual([d.attr, d.prot, d.onRevoke, d.args], ["uc", "rw", undefined, []]);
  assert.equal(
    (parseCli(["exec", "sim0", "2", "--on-revoke=warn", "--", "true"]) as typeof d).onRevoke,
    undefined,
  );
  assert.equal(
    (parseCli(["exec", "sim0", "2", "--on-revoke", "SIGKILL", "--", "true"]) as typeof d).onRevoke,
    "SIGKILL",
  );
});

test("exec: argument errors say what to do", () => {
  usageError(["exec", "sim0", "BAR2"], /exec needs "--" and a program after it, e\.g\. vfio-broker exec/);
  usageError(["exec", "sim0", "BAR2", "--"], /exec needs "--" and a program after it/);
  usageError(["exec", "sim0", "--", "prog"], /exec needs a device and a region before "--"/);
  usageError(["exec", "sim0", "BAR2", "prog", "--", "x"], /exec needs a device and a region before "--"/);
  usageError(["exec", "sim0", "BAR2", "--json", "--", "prog"], /--json does not apply to exec/);
  usageError(["exec", "sim0", "BAR2", "--write", "0=00", "--", "prog"], /--write does not apply to exec/);
  usageError(["exec", "sim0", "BAR2", "--hold", "--", "prog"], /--hold does not apply to exec/);
  usageError(
    ["exec", "sim0", "BAR2", "--on-revoke", "STOP", "--", "p"],
    /--on-revoke "STOP" is not valid; use warn or one of TERM/,
  );
  usageError(["exec", "sim0", "BAR2", "--", ""], /the program name is empty/);
  usageError(["exec", "sim0", "BAR2", "--bogus", "--", "prog"], /unknown option --bogus/);
  usageError(["map", "sim0", "BAR2", "--on-revoke", "TERM"], /--on-revoke only applies to the exec command/);
});
