// An HTTP/2 peer that stops reading: it sets SETTINGS_INITIAL_WINDOW_SIZE=0 and pipelines
// ReadRegion calls, so brokerd can send none of the responses. brokerd used to queue every one
// (5.44 GB RSS after ~48 MB of requests). Now each connection has at most 32 calls in flight and
// 4 MiB of HTTP/2 session memory, so one attacking connection may grow brokerd's RSS by < 64 MB,
// which comes back when it leaves; a victim of another uid keeps granting throughout.
// Then HTTP/2 abuse that costs brokerd CPU per frame (agents/h2-reset.ts): rapid reset (HEADERS +
// RST_STREAM, a new connection after each GOAWAY) and HPACK dynamic-table bombs. The victim's
// p50 during the attack must stay within 4x (+25 ms) of its p50 just before, on the same brokerd:
// it used to be 10-30x (the issue: 1 s and 5.3 s against 13 ms).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { until } from "../lib/brokerd.js";
import {
  assertAlive,
  assertVictim,
  attacker,
  observe,
  report,
  sample,
  startVictim,
  suiteBrokerd,
  watch,
} from "./support/harness.js";

describe("hostile: HTTP/2 flow control", () => {
  const suite = suiteBrokerd();

  it("a window-0 peer pipelining ReadRegion grows brokerd's RSS < 64 MB, and it comes back", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    // Memory, measured with the attacker alone (an honest client's own churn moves RSS too).
    await new Promise((r) => setTimeout(r, 500));
    const before = sample(b);
    const peaks = watch(b);
    const a = attacker("h2-stall", [b.socket, "5000"]);
    await a.phase("holding");
    const during = sample(b);
    a.kill("SIGTERM");
    const r = (await a.result()) as { sent: number; accepted: number; requestBytes: number };
    const p = peaks.stop();
    assertAlive(b);
    let afterRss = sample(b).rssMB;
    await until(
      "brokerd's RSS to come back",
      () => {
        afterRss = sample(b).rssMB;
        return afterRss - before.rssMB < 32;
      },
      15_000,
      250,
    ).catch(() => {});
    // Availability: the same attack again, with a victim of another uid granting throughout.
    const victim = startVictim(b);
    const again = attacker("h2-stall", [b.socket, "5000"]);
    await again.phase("holding");
    again.kill("SIGTERM");
    await again.result();
    const v = await victim.stop();
    assertAlive(b);
    report("http2 window 0", {
      attacker: r,
      victim: v,
      rssMB: { before: before.rssMB, during: during.rssMB, peak: p.maxRssMB, after: afterRss },
    });
    assert.ok(r.sent >= 1000, `the attacker offered only ${r.sent} calls`);
    assert.ok(p.maxRssMB - before.rssMB < 64, `RSS grew by ${p.maxRssMB - before.rssMB} MB`);
    assert.ok(
      afterRss - before.rssMB < 32,
      `RSS stayed ${afterRss - before.rssMB} MB above where it started`,
    );
    assertVictim(v);
  });
});

describe("hostile: a lease that is never read", () => {
  const suite = suiteBrokerd();

  it("keepalives whose acks are never read: brokerd ends the session (lease-stalled) and drops the peer", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const before = sample(b);
    const watching = observe(b);
    const a = attacker("lease-stall", [b.socket, "15000"]);
    const r = (await a.result()) as { keepalives: number; closedByBroker: boolean; ms: number };
    const { victim, peak } = await watching.stop();
    const stalled = readFileSync(b.journal, "utf8").includes('"reason":"lease-stalled"');
    report("lease never read", {
      attacker: r,
      stalledInJournal: stalled,
      victim,
      rssMB: { before: before.rssMB, peak: peak.maxRssMB },
    });
    assert.ok(r.closedByBroker, `brokerd kept the connection for ${r.ms} ms and ${r.keepalives} keepalives`);
    assert.ok(stalled, "the journal says why the session ended");
    assert.ok(peak.maxRssMB - before.rssMB < 64, `RSS grew by ${peak.maxRssMB - before.rssMB} MB`);
    assertVictim(victim);
  });
});

/** The victim alone for ms, then with `attack` running: both results, same brokerd, same run. */
async function victimDuring(
  b: Parameters<typeof startVictim>[0],
  ms: number,
  args?: string[],
): Promise<{ victim: Awaited<ReturnType<ReturnType<typeof startVictim>["stop"]>>; attacker?: unknown }> {
  const victim = startVictim(b);
  const a = args ? attacker("h2-reset", [b.socket, ...args]) : undefined;
  await new Promise((r) => setTimeout(r, ms));
  a?.kill("SIGTERM");
  const r = await a?.result();
  const v = await victim.stop();
  assertAlive(b);
  return { victim: v, ...(r ? { attacker: r } : {}) };
}

/** Victim p50 under attack is within `times` of the same run's baseline (plus scheduling slack). */
function assertNearBaseline(what: string, p50: number, baseline: number, times = 4): void {
  assert.ok(
    p50 <= baseline * times + 25,
    `${what}: victim p50 ${p50} ms against ${baseline} ms without the attack (bound: ${times}x + 25 ms)`,
  );
}

describe("hostile: HTTP/2 rapid reset", () => {
  const suite = suiteBrokerd();

  it("HEADERS + RST_STREAM, reconnecting after each GOAWAY, 2 and 8 connections: the victim stays near its baseline", {
    timeout: 180_000,
  }, async () => {
    const { b } = suite;
    const base = await victimDuring(b, 4000);
    const two = await victimDuring(b, 8000, ["2", "8000", "reset"]);
    const eight = await victimDuring(b, 8000, ["8", "8000", "reset"]);
    const journal = readFileSync(b.journal, "utf8");
    report("http2 rapid reset", {
      baseline: base.victim,
      two,
      eight,
      backoffsInJournal: (journal.match(/"reason":"limit:resets"/g) ?? []).length,
    });
    for (const [what, r] of [
      ["2 connections", two],
      ["8 connections", eight],
    ] as const) {
      assertVictim(r.victim);
      assertNearBaseline(what, r.victim.p50Ms, base.victim.p50Ms);
    }
  });
});

// Each on its own brokerd: an attack leaves uid 65534 in backoff, which would refuse the next
// one before any HPACK is decoded.
for (const [mode, what] of [
  ["hpack", "SETTINGS never acknowledged (the default 4 KiB table stays)"],
  ["hpack-ack", "SETTINGS acknowledged"],
] as const)
  describe(`hostile: HPACK dynamic-table bomb, ${what}`, () => {
    const suite = suiteBrokerd();

    it("4 connections of one-byte references to a 4 KB entry: the victim stays near its baseline", {
      timeout: 120_000,
    }, async () => {
      const { b } = suite;
      const base = await victimDuring(b, 4000);
      const bomb = await victimDuring(b, 8000, ["4", "8000", mode]);
      report("http2 hpack bomb", { mode, baseline: base.victim, ...bomb });
      assertVictim(bomb.victim);
      assertNearBaseline(`bomb (${mode})`, bomb.victim.p50Ms, base.victim.p50Ms);
    });
  });
