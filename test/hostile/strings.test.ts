// Issue 18 row 5 and the strings class: every string a client sends has a length limit (and ids a
// character set), written in the .proto and checked in one place (services/brokerd/src/rpc/
// strings.ts) before any handler keeps it. Before: a 60 KiB request_id on OpenDevice/CloseDevice,
// 256 per session, grew brokerd's RSS by about a gigabyte in 23 s and its state store by 121 MB
// (each id remembered per session, written to the store with its device file, and the remembered
// device file kept alive by it). Now: INVALID_ARGUMENT naming the field and its limit, on every
// RPC and fd-channel request that takes a string; RSS and the state store stay flat.
import assert from "node:assert/strict";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { assertVictim, attacker, observe, report, sample, suiteBrokerd } from "./support/harness.js";

const SECONDS = Number(process.env.HOSTILE_STRINGS_SECONDS ?? 12);
const SESSIONS = Number(process.env.HOSTILE_STRINGS_SESSIONS ?? 4);

function dirBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    // The simulated BARs (sim/) are memory, not records.
    if (e.name !== "sim") n += e.isDirectory() ? dirBytes(p) : statSync(p).size;
  }
  return n;
}

describe("hostile: client-supplied strings", () => {
  const suite = suiteBrokerd();

  it("60 KiB request ids on OpenDevice/CloseDevice from one uid: refused, RSS and the state store stay flat", {
    timeout: 180_000,
  }, async () => {
    const { b } = suite;
    const store = b.stateDir;
    const before = {
      rssMB: sample(b).rssMB,
      storeBytes: dirBytes(store),
      journalBytes: statSync(b.journal).size,
    };
    const watching = observe(b);
    const a = attacker("strings", ["flood", b.socket, String(SECONDS), String(SESSIONS)]);
    const r = (await a.result()) as { calls: number; codes: Record<string, number> };
    const after = {
      rssMB: sample(b).rssMB,
      storeBytes: dirBytes(store),
      journalBytes: statSync(b.journal).size,
    };
    const { victim: v, peak } = await watching.stop();
    report("60 KiB request ids", {
      seconds: SECONDS,
      sessions: SESSIONS,
      attacker: r,
      before,
      after,
      rssGrowthMB: Math.round((peak.maxRssMB - before.rssMB) * 10) / 10,
      storeGrowthBytes: after.storeBytes - before.storeBytes,
      brokerdPeak: peak,
      victim: v,
    });
    assert.equal(r.codes.OK ?? 0, 0, "an oversize request id was accepted");
    assert.ok((r.codes.INVALID_ARGUMENT ?? 0) > 0, JSON.stringify(r.codes));
    assert.ok(peak.maxRssMB - before.rssMB < 100, `brokerd's RSS grew by ${peak.maxRssMB - before.rssMB} MB`);
    assert.ok(after.storeBytes - before.storeBytes < 4 * 1024 * 1024, "the state store grew");
    assertVictim(v);
  });

  it("every string field over its limit, on every RPC and fd-channel request that takes one: INVALID_ARGUMENT / BAD_REQUEST naming it", {
    timeout: 60_000,
  }, async () => {
    const { b } = suite;
    const a = attacker("strings", ["probe", b.socket, b.fdSocket]);
    const { results } = (await a.result()) as { results: Record<string, string> };
    report("string limits", { results });
    for (const [what, got] of Object.entries(results)) {
      if (what === "FdGrant (valid)") {
        assert.match(got, /^OK/, `${what}: ${got}`);
        continue;
      }
      const field = what.split(" ")[0]!.split(".").pop()!;
      if (what.startsWith("Fd")) assert.match(got, /^BAD_REQUEST: /, `${what}: ${got}`);
      else assert.match(got, /^INVALID_ARGUMENT: /, `${what}: ${got}`);
      assert.ok(got.includes(field), `${what}: the message does not name ${field}: ${got}`);
      assert.match(got, /at most \d+/, `${what}: the message does not say the limit: ${got}`);
    }
  });
});
