// The kill -9 matrix (issue 10): 64 clients (4 fleet processes of 16, uid 65534) hold mappings
// while brokerd is killed with SIGKILL in each step of the grant handshake, and started again on
// the same state directory. Steps: mapping (CreateMapping, its reply, ticket redemption, mmap; the
// kill lands anywhere in it), releasing, closing a device file, and idle leases between keepalives.
// Each step runs twice, on the same fleets (so they live through 10 restarts).
// Per restart it asserts:
//   - no grant lost: every client's call in flight completes (after its resume), every client
//     keeps its first mapping, and the pattern written through it reads back (mmap + brokerd);
//   - no grant doubled: brokerd holds exactly the mappings the clients hold (retries made no
//     second one), and a held WC page cannot be had UC by anyone;
//   - dead clients (a fleet killed while brokerd was down) are released: their pages can be
//     mapped again UC;
// and, at the end, that brokerd's fd count is back at its baseline. Prints resume times p50/p99.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, describe, it } from "node:test";
import { connect } from "@vfio-broker/client";
import { type BrokerProcess, NOBODY, SIM_POLICY, startBrokerd, until } from "../lib/brokerd.js";
import { admin, type Fleet, fleetSessionNames, percentile, report, startFleet } from "./support/fleet.js";

const POLICY = readFileSync(SIM_POLICY, "utf8").replace(
  "allowDeviceFd: false",
  "allowDeviceFd: false\n    limits: { sessions: 512, fdConnections: 512, pendingMappings: 512, deviceFiles: 512, mappings: 4096 }",
);
const ARGS = ["--lease-keepalive-ms", "300", "--resume-grace-ms", "20000"];
const FLEETS = 4;
const PER_FLEET = 16;
const STEPS: { cmd: string; killAfterMs: number[] }[] = [
  { cmd: "map", killAfterMs: [3, 40] },
  { cmd: "release", killAfterMs: [2, 25] },
  { cmd: "close", killAfterMs: [2, 30] },
  { cmd: "idle", killAfterMs: [150, 450] },
];

let b: BrokerProcess;
const fleets: Fleet[] = [];
after(async () => {
  for (const f of fleets) await f.kill();
  await b?.stop();
});

/** A probe client as root maps page `page` of BAR2 UC: ok, or the gRPC code name of its refusal. */
async function probeUC(socket: string, page: number): Promise<string> {
  const c = await connect({ socket, clientName: "probe", autoResume: false });
  try {
    const df = await c.open("sim0");
    const m = await df.map("BAR2", { offset: page * 4096, length: 4096, attr: "uc" });
    await m.release();
    return "ok";
  } catch (e) {
    return (e as { code?: string }).code ?? (e as Error).message;
  } finally {
    await c.close();
  }
}

describe("restart: the kill -9 matrix", () => {
  it("64 clients keep every grant through kill -9 at each handshake step, none doubled", {
    timeout: 600_000,
  }, async () => {
    b = await startBrokerd({ policyText: POLICY, args: ARGS });
    const baselineFds = b.fdCount();
    for (let f = 0; f < FLEETS; f++)
      fleets.push(await startFleet(b.socket, PER_FLEET, f * PER_FLEET, NOBODY));
    const doomedPage = FLEETS * PER_FLEET;
    const rows: Record<string, unknown>[] = [];
    let restarts = 0;
    for (const step of STEPS) {
      for (const delay of step.killAfterMs) {
        // Give the release step something to release, and the close step a device file with a mapping.
        if (step.cmd === "release" || step.cmd === "close")
          for (const f of fleets) assert.deepEqual(await f.run("map"), []);
        const doomed = await startFleet(b.socket, 2, doomedPage, NOBODY);
        for (const f of fleets) f.send(step.cmd);
        await new Promise((r) => setTimeout(r, delay));
        const t0 = Date.now();
        const exited = new Promise((r) => b.proc.once("exit", r));
        b.proc.kill("SIGKILL");
        await exited;
        // A client that dies while brokerd is down: the restart must release what it held.
        await doomed.kill();
        b = await startBrokerd({ policyText: POLICY, args: ARGS, dir: b.dir });
        restarts++;
        const errors = (await Promise.all(fleets.map((f) => f.awaitDone(step.cmd)))).flat();
        assert.deepEqual(errors, [], `step ${step.cmd} (kill after ${delay} ms): calls failed`);
        const verify = (await Promise.all(fleets.map((f) => f.run("verify")))).flat();
        assert.deepEqual(verify, [], "every client keeps its mapping and its bytes");
        const downMs = Date.now() - t0;

        // No grant doubled: brokerd holds exactly what the clients hold, no more.
        const stats = await Promise.all(fleets.map((f) => f.stats()));
        const held = stats.reduce((n, s) => n + s.mappings, 0);
        const a = admin(b);
        const sessions = (await a.listSessions({})).sessions;
        a.close();
        const fleetPids = new Set(fleets.map((f) => f.pid));
        const live = sessions.filter((s) => fleetPids.has(s.identity?.pid ?? -1));
        // One session per client (and a gRPC side session per workload-protocol client, opened by
        // its ReadRegion in "verify"): each resumed after every restart, none doubled.
        assert.deepEqual(
          live.map((s) => s.clientName).sort(),
          fleetSessionNames(FLEETS * PER_FLEET, PER_FLEET),
          "one session per client (and one side session per workload-protocol client)",
        );
        assert.equal(
          live.reduce((n, s) => n + s.mappings, 0),
          held,
          "brokerd books exactly the clients' mappings",
        );
        assert.ok(
          !sessions.some((s) => s.identity?.pid === doomed.pid),
          "the dead client's sessions were released at reconcile",
        );
        assert.deepEqual(
          stats.flatMap((s) => s.lost),
          [],
          "no client lost its session",
        );
        // A held WC page cannot be had UC; the dead client's page can.
        assert.equal(await probeUC(b.socket, 0), "FAILED_PRECONDITION");
        assert.equal(await probeUC(b.socket, doomedPage), "ok");
        rows.push({ step: step.cmd, killAfterMs: delay, recoveredMs: downMs, mappings: held });
      }
    }
    const resumes = (await Promise.all(fleets.map((f) => f.stats()))).flatMap((s) => s.resumes);
    assert.ok(
      resumes.length >= restarts * FLEETS * PER_FLEET,
      `every client resumed each time (${resumes.length})`,
    );
    for (const f of fleets) assert.deepEqual(await f.run("closeAll"), []);
    await until("brokerd's fds back at baseline", () => b.fdCount() <= baselineFds, 10_000);
    report("kill -9 matrix", {
      clients: FLEETS * PER_FLEET,
      restarts,
      resumeP50Ms: percentile(resumes, 50),
      resumeP99Ms: percentile(resumes, 99),
      fdsBaseline: baselineFds,
      fdsAfter: b.fdCount(),
    });
    for (const r of rows) report("  restart", r);
  });
});
