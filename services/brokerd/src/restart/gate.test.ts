// HandoverGate: calls wait while held and all go on at release; unheld, wait() is immediate.
import assert from "node:assert/strict";
import { test } from "node:test";
import { HandoverGate } from "./gate.js";

test("held: waiters wait until release, then all go on; hold and release are idempotent", async () => {
  const g = new HandoverGate();
  let passed = 0;
  await g.wait();
  g.hold();
  g.hold();
  assert.equal(g.held, true);
  const waiting = [g.wait(), g.wait()].map((p) => p.then(() => passed++));
  await new Promise((r) => setImmediate(r));
  assert.equal(passed, 0);
  g.release();
  g.release();
  await Promise.all(waiting);
  assert.equal(passed, 2);
  assert.equal(g.held, false);
  await g.wait();
});
