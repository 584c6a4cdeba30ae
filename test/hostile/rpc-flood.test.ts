// A flood of cheap, allowed calls: 16 sessions of one uid, each with 32 ListDevices calls in
// flight back to back. Nothing here is over a quota; what is measured is that the victim's grants
// still go through (brokerd is one event loop: it serves connections in turn, so a flooding uid
// slows others down but does not lock them out), and that brokerd's memory stays bounded.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { assertVictim, attacker, observe, report, sample, suiteBrokerd } from "./support/harness.js";

describe("hostile: a flood of allowed calls", () => {
  const suite = suiteBrokerd();

  it("16 sessions x 32 calls in flight: the victim keeps granting, RSS stays bounded", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const before = sample(b);
    const watching = observe(b);
    const a = attacker("rpc-flood", [b.socket, "16", "32", "6000"]);
    const r = (await a.result()) as { calls: number; errors: Record<string, number>; callsPerSecond: number };
    const { victim, peak } = await watching.stop();
    report("rpc flood", {
      attacker: r,
      victim,
      rssMB: { before: before.rssMB, peak: peak.maxRssMB },
      peakFds: peak.maxFds,
    });
    assert.ok(r.calls > 1000, `the flood made only ${r.calls} calls`);
    assert.ok(peak.maxRssMB - before.rssMB < 64 * 16, `RSS grew by ${peak.maxRssMB - before.rssMB} MB`);
    assertVictim(victim);
  });
});
