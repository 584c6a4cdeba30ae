// A planned upgrade under load (issue 10): 32 clients (2 fleet processes, uid 65534) map, write,
// read back and release in a loop while a second brokerd starts with --take-over on the same
// runtime directory. It takes the first one's listening sockets over handover.sock; the first
// freezes its state, tells its leases "restart" and exits 0. Asserted: 0 errors seen by any
// client, every client still holds its first mapping with its bytes, brokerd holds exactly what
// they hold. Prints the cycles done and the clients' resume times.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import { type BrokerProcess, NOBODY, SIM_POLICY, startBrokerd } from "../lib/brokerd.js";
import { admin, type Fleet, fleetSessionNames, percentile, report, startFleet } from "./support/fleet.js";

const POLICY = readFileSync(SIM_POLICY, "utf8").replace(
  "allowDeviceFd: false",
  "allowDeviceFd: false\n    limits: { sessions: 256, fdConnections: 256, pendingMappings: 256, deviceFiles: 256, mappings: 4096 }",
);

const fleets: Fleet[] = [];
let b: BrokerProcess | undefined;
after(async () => {
  for (const f of fleets) await f.kill();
  await b?.stop();
});

describe("restart: planned upgrade", () => {
  it("--take-over under load: 32 clients mapping in a loop see 0 errors", { timeout: 180_000 }, async () => {
    const old = await startBrokerd({ policyText: POLICY });
    b = old;
    for (let f = 0; f < 2; f++) fleets.push(await startFleet(old.socket, 16, f * 16, NOBODY));
    for (const f of fleets) assert.deepEqual(await f.run("churnStart"), []);
    await new Promise((r) => setTimeout(r, 1500));
    const oldExit = new Promise<number | null>((r) => old.proc.once("exit", (c) => r(c)));
    const t0 = Date.now();
    b = await startBrokerd({ policyText: POLICY, dir: old.dir, args: ["--take-over"] });
    const takeoverMs = Date.now() - t0;
    assert.equal(await oldExit, 0, `the old brokerd exits 0:\n${old.stderr()}`);
    await new Promise((r) => setTimeout(r, 2000));
    const stopped = await Promise.all(fleets.map((f) => f.runLine("churnStop")));
    const errors = stopped.flatMap((l) => l.errors as string[]);
    assert.deepEqual(errors, [], "no client saw an error");
    const cycles = stopped.reduce((n, l) => n + (l.cycles as number), 0);
    assert.deepEqual((await Promise.all(fleets.map((f) => f.run("verify")))).flat(), []);
    const stats = await Promise.all(fleets.map((f) => f.stats()));
    const a = admin(b);
    const sessions = (await a.listSessions({})).sessions;
    a.close();
    const pids = new Set(fleets.map((f) => f.pid));
    const mine = sessions.filter((s) => pids.has(s.identity?.pid ?? -1));
    assert.deepEqual(
      mine.map((s) => s.clientName).sort(),
      fleetSessionNames(32, 16),
      "one session per client (and one side session per workload-protocol client)",
    );
    assert.equal(
      mine.reduce((n, s) => n + s.mappings, 0),
      stats.reduce((n, s) => n + s.mappings, 0),
    );
    const resumes = stats.flatMap((s) => s.resumes);
    report("planned upgrade under load", {
      clients: 32,
      cycles,
      errors: errors.length,
      takeoverStartMs: takeoverMs,
      resumed: resumes.length,
      resumeP50Ms: percentile(resumes, 50),
      resumeP99Ms: percentile(resumes, 99),
    });
  });
});
