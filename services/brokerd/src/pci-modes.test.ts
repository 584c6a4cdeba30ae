// The per-function modes of the configuration (pci-modes.ts, through config.ts): --pci BDF=MODE,
// the config file's "pci" object, the older --sysfs / --vfio as modes sysfs-wc / vfio, and the
// errors for an unknown mode, a malformed pair and one function given two modes.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type Config, parseConfig } from "./config.js";

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseConfig(argv, env) as Config;

test("--pci BDF=MODE, --sysfs and --vfio together: normalized BDFs per mode, each once", () => {
  const c = parse([
    "--pci",
    "3b:00.1=sysfs-wc,0000:3b:00.0=vfio",
    "--sysfs",
    "0000:3b:00.1,0000:3c:00.0",
    "--vfio",
    "0000:3d:00.0",
  ]);
  assert.deepEqual(c.sysfs, ["0000:3b:00.1", "0000:3c:00.0"]);
  assert.deepEqual(c.vfio, ["0000:3b:00.0", "0000:3d:00.0"]);
  assert.deepEqual([parse([]).sysfs, parse([]).vfio], [[], []]);
});

test('the environment (VFIO_BROKER_PCI) and the config file\'s "pci" object', () => {
  assert.deepEqual(parse([], { VFIO_BROKER_PCI: "0000:00:01.0=vfio" }).vfio, ["0000:00:01.0"]);
  const dir = mkdtempSync(join(tmpdir(), "pci-modes-"));
  try {
    const file = join(dir, "brokerd.json");
    writeFileSync(file, JSON.stringify({ pci: { "0000:00:01.0": "sysfs-wc", "0000:00:02.0": "vfio" } }));
    const c = parse(["--config", file]);
    assert.deepEqual([c.sysfs, c.vfio], [["0000:00:01.0"], ["0000:00:02.0"]]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("errors say what to write: unknown mode, a pair without '=', two modes for one function, a bad BDF", () => {
  assert.throws(
    () => parse(["--pci", "0000:00:01.0=wc"]),
    /mode "wc" for 0000:00:01.0 is not one of sysfs-wc, vfio/,
  );
  assert.throws(() => parse(["--pci", "0000:00:01.0"]), /write BDF=MODE, e.g. --pci 0000:3b:00.1=sysfs-wc/);
  assert.throws(
    () => parse(["--pci", "0000:00:01.0=vfio", "--sysfs", "00:01.0"]),
    /0000:00:01.0 is given mode vfio \(--pci\) and mode sysfs-wc \(--sysfs\); give it one mode/,
  );
  assert.throws(() => parse(["--pci", "3b:00=vfio"]), /not a PCI address/);
});
