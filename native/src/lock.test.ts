// flockExclusive: one holder at a time, and a holder that dies (SIGKILL) leaves no stale lock.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { closeFd, flockExclusive } from "./index.js";

test("flockExclusive: a second open file description is refused until the first closes", () => {
  const dir = mkdtempSync(join(tmpdir(), "vfio-lock-"));
  try {
    const a = openSync(join(dir, "lock"), "a");
    const b = openSync(join(dir, "lock"), "a");
    assert.equal(flockExclusive(a), true);
    assert.equal(flockExclusive(a), true, "re-locking by the holder succeeds");
    assert.equal(flockExclusive(b), false);
    closeFd(a);
    assert.equal(flockExclusive(b), true);
    closeSync(b);
    assert.throws(() => flockExclusive(b), { code: "EBADF" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("flockExclusive: the lock of a SIGKILLed holder is free at once", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vfio-lock-"));
  try {
    const path = join(dir, "lock");
    const child = spawn("flock", ["--exclusive", "--no-fork", path, "sleep", "30"], { stdio: "ignore" });
    // Wait until the child holds it (poll: each probe that wins closes at once to let it in).
    let fd = -1;
    for (let i = 0; i < 400; i++) {
      fd = openSync(path, "a");
      if (!flockExclusive(fd)) break;
      closeSync(fd);
      fd = -1;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.notEqual(fd, -1, "flock(1) never took the lock");
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    assert.equal(flockExclusive(fd), true);
    closeSync(fd);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
