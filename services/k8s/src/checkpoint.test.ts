// Tests for checkpoint.ts and atomic-file.ts: the checkpoint survives a new instance (a restarted
// agent), is replaced whole, and is refused in a directory someone else could write or swap.
import assert from "node:assert/strict";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CHECKPOINT_FILE, Checkpoint, type PreparedClaim } from "./checkpoint.js";

const claim = (n: number): PreparedClaim => ({
  uid: `aaaaaaaa-bbbb-4ccc-8ddd-${String(n).padStart(12, "0")}`,
  namespace: "ns",
  name: `c${n}`,
  podUids: ["99999999-8888-4777-8666-555555555555"],
  devices: [{ request: "bar", pool: "node", device: "sim0", brokerId: "sim0" }],
  cdiDeviceIds: ["vfio-broker.io/claim=x"],
});

function withDir(fn: (d: string) => void): void {
  const d = mkdtempSync(join(tmpdir(), "ckpt-"));
  try {
    fn(d);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

test("what one instance puts, a new instance reads; deletes too; nothing but the file is left", () =>
  withDir((d) => {
    const dir = join(d, "state");
    const a = new Checkpoint(dir);
    a.put(claim(1));
    a.put(claim(2));
    a.delete(claim(1).uid);
    const b = new Checkpoint(dir);
    assert.deepEqual(b.all(), [claim(2)]);
    assert.deepEqual(readdirSync(dir), [CHECKPOINT_FILE]);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, CHECKPOINT_FILE)).mode & 0o777, 0o600);
  }));

test("a directory others may write, or a symlink to one, is refused", () =>
  withDir((d) => {
    const open = join(d, "open");
    mkdirSync(open);
    chmodSync(open, 0o777);
    assert.throws(() => new Checkpoint(open), /writable by group or others/);
    const link = join(d, "link");
    symlinkSync(open, link);
    assert.throws(() => new Checkpoint(link), /not a directory/);
  }));

test("a malformed checkpoint is refused, not half read", () =>
  withDir((d) => {
    const dir = join(d, "state");
    new Checkpoint(dir).put(claim(1));
    writeFileSync(
      join(dir, CHECKPOINT_FILE),
      JSON.stringify({ format: 1, claims: [{ ...claim(2), uid: "../x" }] }),
    );
    assert.throws(() => new Checkpoint(dir), /malformed claim entry/);
    writeFileSync(join(dir, CHECKPOINT_FILE), JSON.stringify({ format: 9, claims: [] }));
    assert.throws(() => new Checkpoint(dir), /not a format-1 checkpoint/);
  }));
