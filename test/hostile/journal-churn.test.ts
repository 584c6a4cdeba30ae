// Issue 18 row 11: grant/release churn by one uid, every step allowed, fills the journal. Before:
// every grant, release and delivery was a full line (the issue measured +106 MB in 22 s, 4.8 MB/s,
// with the victim's p50 going from 13 to 178 ms). Now each identity gets a budget of full lines per
// event and 10 s window (64), then its events are counted into summary lines (one per second at
// most, with a tally by device, region, attribute and reason); full lines plus the summaries'
// counts are exactly what happened.
import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { describe, it } from "node:test";
import { assertVictim, attacker, report, startVictim, suiteBrokerd } from "./support/harness.js";

const SECONDS = Number(process.env.HOSTILE_CHURN_SECONDS ?? 12);
const SESSIONS = Number(process.env.HOSTILE_CHURN_SESSIONS ?? 2);

describe("hostile: grant/release churn and the journal", () => {
  const suite = suiteBrokerd();

  it("one uid churning FdBatch grants and releases: the journal grows by a bounded rate, counts add up", {
    timeout: 180_000,
  }, async () => {
    const { b } = suite;
    // The victim alone first, for its undisturbed latency.
    const alone = startVictim(b);
    await new Promise((r) => setTimeout(r, 3000));
    const quiet = await alone.stop();
    const victim = startVictim(b);
    const startBytes = statSync(b.journal).size;
    const a = attacker("grant-churn", [b.socket, b.fdSocket, String(SECONDS), String(SESSIONS)]);
    const r = (await a.result()) as { batches: number; grants: number; releases: number; errors: string[] };
    const journalBytes = statSync(b.journal).size - startBytes;
    const v = await victim.stop();
    // Let the open windows close and their summaries be written.
    await new Promise((r) => setTimeout(r, 11_000));
    const lines = readFileSync(b.journal, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const attackerSessions = new Set(
      lines.filter((l) => l.event === "session.open" && l.uid === 65534).map((l) => l.session),
    );
    const seen = (event: string) =>
      lines.filter((l) => l.event === event && attackerSessions.has(l.session)).length +
      lines
        .filter((l) => l.event === `${event}.suppressed` && l.uid === 65534)
        .reduce((n, l) => n + (l.count as number), 0);
    const journaled = { grants: seen("mapping.grant"), releases: seen("mapping.release") };
    report("grant/release churn", {
      seconds: SECONDS,
      sessions: SESSIONS,
      attacker: r,
      journaled,
      journalBytes,
      journalBytesPerSecond: Math.round(journalBytes / SECONDS),
      victimAlone: { attempts: quiet.attempts, p50Ms: quiet.p50Ms, p99Ms: quiet.p99Ms },
      victim: v,
    });
    assert.ok(r.grants > 1000, `the attacker made only ${r.grants} grants`);
    assert.ok(journalBytes / SECONDS < 100_000, `the journal grew by ${journalBytes / SECONDS} bytes/s`);
    // Every grant and release of the attacker is in the journal, as a line or in a count. The
    // releases of its last batch happen when its sessions end (process exit), so they are more.
    assert.equal(journaled.grants, r.grants, "grants: full lines + summary counts");
    assert.ok(journaled.releases >= r.releases, "releases: full lines + summary counts");
    assertVictim(v);
  });
});
