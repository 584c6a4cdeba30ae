// Issue 18 row 9: a planned upgrade (--take-over) while the state store is damaged. Before: the
// successor took the sockets, the old brokerd froze and exited, then the successor refused the
// store: nothing served and the leased clients lost their mappings. Now the successor checks the
// store (reads it and re-books every mapping, writing nothing) while the old one is frozen and
// before it lets go; the check fails, so it abandons the hand-over and exits 1 saying why, and the
// old one thaws, keeps serving, says why and rewrites the store from memory. Asserted: clients
// mapping in a loop through it see 0 errors, every leased client keeps its first mapping with its
// bytes and can still grant, and a second --take-over (the store rewritten) then works.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  type BrokerProcess,
  brokerdArgs,
  NOBODY,
  privateDirOf,
  run,
  startBrokerd,
  tempDir,
} from "../lib/brokerd.js";
import { type Fleet, report, startFleet } from "../restart/support/fleet.js";

const fleets: Fleet[] = [];
const brokers: BrokerProcess[] = [];
after(async () => {
  for (const f of fleets) await f.kill();
  for (const b of brokers.reverse()) await b.stop();
});

/** Flips one byte inside the log's first record (a run record, never the torn tail). */
function damage(stateDir: string): string {
  const log = readdirSync(stateDir).find((f) => /^state\.\d+\.log$/.test(f));
  assert.ok(log, `a state log in ${stateDir}: ${readdirSync(stateDir).join(", ")}`);
  const file = join(stateDir, log);
  const text = readFileSync(file, "utf8");
  const nl = text.indexOf("\n");
  assert.ok(nl > 10 && text.length > nl + 1, "the log holds more than one record");
  const i = Math.floor(nl / 2);
  writeFileSync(file, `${text.slice(0, i)}${text[i] === "x" ? "y" : "x"}${text.slice(i + 1)}`);
  return file;
}

describe("restart: --take-over with a damaged state store", () => {
  it("the old brokerd keeps serving, clients keep their mappings, the successor says why", {
    timeout: 180_000,
  }, async () => {
    const dir = tempDir("vfio-broker-takeover-");
    // The state store and the journals are brokerd's own: in its private dir (the default), never
    // in the workload dir.
    const old = await startBrokerd({ dir });
    const stateDir = old.stateDir;
    brokers.push(old);
    const fleet = await startFleet(old.socket, 8, 0, NOBODY);
    fleets.push(fleet);
    assert.deepEqual(await fleet.run("churnStart"), []);
    await new Promise((r) => setTimeout(r, 1000));
    damage(stateDir);

    const t0 = Date.now();
    const successor = await run(
      process.execPath,
      brokerdArgs(dir, old.policyPath, join(privateDirOf(dir), "journal-successor.jsonl"), ["--take-over"]),
      { timeoutMs: 60_000 },
    );
    const refusedMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 1500));
    const oldAlive = old.proc.exitCode === null && old.proc.signalCode === null;
    const churn = await fleet.runLine("churnStop");
    const verify = oldAlive ? await fleet.run("verify") : ["the old brokerd exited"];
    const grant = oldAlive ? await fleet.run("map") : ["the old brokerd exited"];
    const stats = await fleet.stats();
    report("take-over with a damaged state store", {
      successorExit: successor.code,
      successorSays: successor.stderr.trim().slice(0, 300),
      refusedMs,
      oldServing: oldAlive,
      clients: 8,
      cycles: churn.cycles,
      errors: (churn.errors as string[]).length,
      firstErrors: (churn.errors as string[]).slice(0, 3),
      verifyErrors: verify.length,
      grantErrors: grant.length,
      lost: stats.lost.length,
      resumed: stats.resumes.length,
    });
    assert.equal(successor.code, 1, successor.stderr);
    assert.match(successor.stderr, /not taking over: the state store .* is unusable/);
    assert.match(successor.stderr, new RegExp(`pid ${old.pid}\\) keeps serving`));
    assert.ok(oldAlive, `the old brokerd is still running:\n${old.stderr()}`);
    assert.match(old.stderr(), /aborted: pid \d+ will not serve: its check of the state store failed/);
    assert.match(old.stderr(), /rewrote the state store from memory/);
    assert.match(readFileSync(old.journal, "utf8"), /"handover.aborted"/);
    assert.deepEqual(churn.errors, [], "no client saw an error");
    assert.deepEqual(verify, [], "every client still holds its first mapping with its bytes");
    assert.deepEqual(grant, [], "every client can still grant");
    assert.deepEqual(stats.lost, []);

    // The store was rewritten from memory: the upgrade can go ahead now, and loses nothing.
    const oldExit = new Promise<number | null>((r) => old.proc.once("exit", (c) => r(c)));
    const next = await startBrokerd({ dir, args: ["--take-over"] });
    brokers.push(next);
    assert.equal(await oldExit, 0, old.stderr());
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(await fleet.run("verify"), []);
    assert.deepEqual(await fleet.run("map"), []);
    assert.deepEqual((await fleet.stats()).lost, []);
  });
});
