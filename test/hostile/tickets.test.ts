// Hostile: spent tickets (docs/security.md, "tickets in brokerd's memory"). Every CreateMapping
// issues a ticket; once used (or expired, or revoked) brokerd remembers it so a replay is told
// ALREADY_USED rather than UNKNOWN_TICKET. Two uids loop CreateMapping, FetchFd, a replay and
// ReleaseMapping, every step allowed, well past the bound: brokerd's tickets (its
// vfio_broker_tickets_held gauge, sampled throughout) never exceed 4096 spent, a fresh replay is
// still told ALREADY_USED, the first ticket of the flood is forgotten (UNKNOWN_TICKET), and a victim
// of another uid keeps granting.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { freePort } from "./journal-support.js";
import { ATTACKER, assertVictim, attacker, observe, report, suiteBrokerd } from "./support/harness.js";

const port = await freePort();
const PER_UID = Number(process.env.HOSTILE_TICKETS_PER_UID ?? 3000);
const BOUND = 4096;

interface Churn {
  tickets: number;
  fetched: number;
  replays: Record<string, number>;
  releases: number;
  firstReplay: string;
  errors: string[];
}

async function held(): Promise<{ live: number; spent: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const read = (state: string) =>
    Number(new RegExp(`^vfio_broker_tickets_held\\{state="${state}"\\} (\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { live: read("live"), spent: read("spent") };
}

describe("hostile: spent tickets", () => {
  const suite = suiteBrokerd({ args: ["--metrics", `127.0.0.1:${port}`] });

  it(`two uids spending ${2 * PER_UID} tickets: brokerd remembers at most ${BOUND}`, {
    timeout: 180_000,
  }, async () => {
    const { b } = suite;
    const seen = { maxSpent: 0, maxLive: 0, samples: 0 };
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const h = await held();
        seen.maxSpent = Math.max(seen.maxSpent, h.spent);
        seen.maxLive = Math.max(seen.maxLive, h.live);
        seen.samples++;
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const o = observe(b);
    const args = [b.socket, b.fdSocket, String(PER_UID), "90", "4"];
    const runs = (await Promise.all(
      [ATTACKER, ATTACKER - 1].map((uid) => attacker("ticket-churn", args, uid).result()),
    )) as Churn[];
    const { victim, peak } = await o.stop();
    sampling = false;
    await sampler;
    const after = await held();
    report("spent tickets", { runs, seen, after, victim, peak });
    for (const r of runs) {
      assert.deepEqual(r.errors, []);
      assert.equal(r.tickets, PER_UID, "each uid made all its tickets");
      assert.equal(r.fetched, r.tickets, "every ticket delivered its fd once");
      assert.deepEqual(r.replays, { ALREADY_USED: r.tickets }, "a replay of a ticket just spent is told so");
      assert.equal(r.firstReplay, "UNKNOWN_TICKET", "the oldest spent ticket was forgotten");
    }
    assert.ok(2 * PER_UID > BOUND, "the flood must pass the bound for this test to mean anything");
    assert.ok(seen.samples >= 3, `only ${seen.samples} samples of the gauge`);
    assert.ok(seen.maxSpent <= BOUND, `brokerd remembered ${seen.maxSpent} spent tickets`);
    assert.equal(after.spent, BOUND, "the bound is reached and held, not overshot or emptied");
    assert.ok(after.live <= 64, `${after.live} live tickets after the flood`);
    assertVictim(victim);
  });
});
