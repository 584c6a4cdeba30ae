import assert from "node:assert/strict";
import { test } from "node:test";
import { exitStatus, spawnFailureStatus } from "./exec.js";

test("exec's exit status is PROGRAM's, as a shell reports it", () => {
  assert.equal(exitStatus(0, null), 0);
  assert.equal(exitStatus(7, null), 7);
  assert.equal(exitStatus(null, "SIGTERM"), 143);
  assert.equal(exitStatus(null, "SIGKILL"), 137);
  assert.equal(exitStatus(null, "SIGINT"), 130);
  assert.equal(spawnFailureStatus("ENOENT"), 127);
  assert.equal(spawnFailureStatus("EACCES"), 126);
  assert.equal(spawnFailureStatus(undefined), 126);
});
