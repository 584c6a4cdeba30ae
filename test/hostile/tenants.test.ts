// One tenant cannot take what belongs to all. brokerd's global caps (1024 sessions, fd-channel
// connections and pending mappings by default) were first come, first served, and the quota per
// identity was 1/16 of each: 20 uids, each inside its own quota, left the victim 0/193 sessions,
// 0/164 fd connections, 19 % of pending mappings; one user with a subordinate uid range has
// 65,536 uids. Now every cap is shared fairly among tenants (a uid in a user's /etc/subuid range
// is that user's), with a reserve for tenants below their minimum (grants/fair-share.ts).
// Attackers: uids 60000+, each filling its own quota of all three (played by a few root processes
// that connect with their effective uid set to each one: hold-as-uids.py holds the connections,
// tenant-pending.js the pending mappings); the victim, uid 4242, does whole grants.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { AdminService, createClient, MappingState } from "@vfio-broker/proto";
import { startBrokerd, until } from "../lib/brokerd.js";
import {
  type Attacker,
  assertVictim,
  attacker,
  observe,
  pythonAttacker,
  report,
  sample,
  VICTIM,
} from "./support/harness.js";

const FIRST_UID = 60000;
/**
 * uids per attacking process. One of each kind plays all 200: each holds only what brokerd admits
 * plus 16 connects in flight, and fewer processes leave brokerd more of a loaded machine's CPU.
 */
const UIDS_PER_AGENT = 200;
/** How long the attack holds once every agent has filled what it could. */
const HOLD_MS = 12_000;

interface Scenario {
  name: string;
  uids: number;
  /** The attacking uids are one user's subordinate range (a temporary subuid file, --subuid). */
  subuid?: boolean;
}

const SCENARIOS: Scenario[] = [
  { name: "20 uids, each its own tenant", uids: 20 },
  { name: "200 uids, each its own tenant", uids: 200 },
  { name: "200 uids of one user's subordinate range", uids: 200, subuid: true },
];

/** p, or a rejection after ms: a stuck agent fails the test and still lets `finally` clean up. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(t));
}

async function run(sc: Scenario): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), "vfio-tenants-"));
  const subuid = join(tmp, "subuid");
  // "nobody" is resolved through /etc/passwd: the range is that user's.
  writeFileSync(subuid, `nobody:${FIRST_UID}:${sc.uids}\n`);
  chmodSync(subuid, 0o644);
  // Through the environment (VFIO_BROKER_SUBUID is --subuid), so the same test runs against a
  // brokerd that has no such option (the "before" figures): it ignores the variable.
  if (sc.subuid) process.env.VFIO_BROKER_SUBUID = subuid;
  // The runtime dir (and so the state store) on tmpfs, as /run is in production: on this disk,
  // shared with other test suites, the store's compaction fsync stalls brokerd for seconds.
  const dir = mkdtempSync(join("/dev/shm", "vfio-tenants-brokerd-"));
  chmodSync(dir, 0o755);
  const b = await startBrokerd({ dir }).finally(() => delete process.env.VFIO_BROKER_SUBUID);
  const holders: Attacker[] = [];
  const hoarders: Attacker[] = [];
  let watching: ReturnType<typeof observe> | undefined;
  try {
    await new Promise((r) => setTimeout(r, 200));
    const baseline = b.fdCount();
    watching = observe(b);
    const ranges: string[][] = [];
    for (let first = 0; first < sc.uids; first += UIDS_PER_AGENT)
      ranges.push([String(FIRST_UID + first), String(Math.min(UIDS_PER_AGENT, sc.uids - first)), "64"]);
    // Each uid's pending-mapping session first (one of its sessions), then all the rest it can get.
    for (const r of ranges)
      hoarders.push(attacker("tenant-pending", [b.socket, ...r], 0, ["--v8-pool-size=0"]));
    await within(
      Promise.all(hoarders.map((a) => a.phase("opened"))),
      20_000,
      "the pending hoarders' sessions",
    );
    for (const r of ranges) holders.push(pythonAttacker("hold-as-uids", [b.socket, b.fdSocket, ...r], 0));
    const agents = [...holders, ...hoarders];
    await within(Promise.all(agents.map((a) => a.phase("filled"))), 40_000, "the attack");
    await new Promise((r) => setTimeout(r, HOLD_MS));
    // What the attackers hold at the end of the attack, as brokerd's operators see it.
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const [sessions, mappings] = await Promise.all([
      admin.listSessions({}, { timeoutMs: 10_000 }),
      admin.listMappings({}, { timeoutMs: 10_000 }),
    ]);
    admin.close();
    const held = sample(b);
    for (const a of agents) a.kill("SIGTERM");
    const holderResults = (await within(
      Promise.all(holders.map((a) => a.result())),
      10_000,
      "the holders' exit",
    )) as {
      attempts: Record<string, number>;
      failed: Record<string, number>;
      rssMB: number;
    }[];
    const results = (await within(
      Promise.all(hoarders.map((a) => a.result())),
      10_000,
      "the hoarders' exit",
    )) as {
      attempts: Record<string, number>;
      pendingCreated: number;
      refusals: Record<string, number>;
      examples: string[];
      rssMB: number;
    }[];
    const observed = watching.stop();
    watching = undefined;
    const { victim: v, peak } = await observed;
    const attackerSessions = sessions.sessions.filter((s) => (s.identity?.uid ?? 0) >= FIRST_UID);
    const uidsWithSessions = new Set(attackerSessions.map((s) => s.identity?.uid)).size;
    const pending = mappings.mappings.filter(
      (m) => (m.identity?.uid ?? 0) >= FIRST_UID && m.mapping?.state === MappingState.PENDING,
    ).length;
    // Whatever brokerd refused the victim, by its journal (the first of each kind in full).
    const victimRefused = readFileSync(b.journal, "utf8")
      .split("\n")
      .filter((l) => l.includes('"connection.refused"') && l.includes(`"uid":${VICTIM}`))
      .map((l) => (JSON.parse(l) as { reason?: string }).reason ?? "?");
    const refusals: Record<string, number> = {};
    for (const r of results)
      for (const [k, n] of Object.entries(r.refusals)) refusals[k] = (refusals[k] ?? 0) + n;
    report(`tenants: ${sc.name}`, {
      victim: v,
      victimRefusedInJournal: victimRefused,
      attackers: {
        uids: sc.uids,
        processes: agents.length,
        holdersRssMB: holderResults.map((r) => r.rssMB),
        hoardersRssMB: results.map((r) => r.rssMB),
        connectAttempts: holderResults.reduce(
          (a, r) => a + r.attempts.sessions! + r.attempts.fdConnections!,
          0,
        ),
        connectEagain: holderResults.reduce((a, r) => a + r.failed.sessions! + r.failed.fdConnections!, 0),
        createMappingAttempts: results.reduce((a, r) => a + r.attempts.pending!, 0),
        mappingsCreated: results.reduce((a, r) => a + r.pendingCreated, 0),
        sessionsHeld: attackerSessions.length,
        uidsWithSessions,
        pendingHeld: pending,
      },
      brokerdFds: { baseline, held: held.fds, peak: peak.maxFds, limit: held.fdLimit },
      refusals,
      examples: results.flatMap((r) => r.examples).slice(0, 4),
    });
    assertVictim(v, 0.99);
    // Every attacking uid got something (their minimum at least) in the fair case.
    if (!sc.subuid) assert.equal(uidsWithSessions, sc.uids, "some attacking uid got no session at all");
    const tenantLine = sc.subuid
      ? /^tenant of uid N \(subuid range of nobody\) holds N /
      : /^tenant of uid N holds N /;
    assert.ok(
      Object.keys(refusals).some((m) => tenantLine.test(m)),
      `no refusal named the tenant:\n${Object.keys(refusals).join("\n")}`,
    );
    // The one user's 200 uids are one tenant: about half of the sessions cap, not all of it.
    if (sc.subuid)
      assert.ok(attackerSessions.length <= 514, `the user holds ${attackerSessions.length} sessions`);
  } finally {
    for (const a of [...holders, ...hoarders]) if (a.exitCode === null) a.kill("SIGKILL");
    // A failed attack still ends the victim (it would keep the test process alive for minutes).
    await watching?.stop().catch(() => {});
    await b.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

describe("hostile: tenants share brokerd's global caps", () => {
  for (const sc of SCENARIOS) it(sc.name, { timeout: 90_000 }, () => run(sc));

  it("a subuid file others may write is ignored, and SIGHUP reads it again", {
    timeout: 60_000,
  }, async () => {
    const tmp = mkdtempSync(join(tmpdir(), "vfio-tenants-"));
    const subuid = join(tmp, "subuid");
    writeFileSync(subuid, `nobody:${FIRST_UID}:${SCENARIOS[1]!.uids}\n`);
    chmodSync(subuid, 0o644);
    process.env.VFIO_BROKER_SUBUID = subuid;
    const b = await startBrokerd().finally(() => delete process.env.VFIO_BROKER_SUBUID);
    try {
      assert.doesNotMatch(b.stderr(), /tenants:/);
      // Anyone may now move uids between users: brokerd stops trusting the file at the next reload.
      chmodSync(subuid, 0o666);
      process.kill(b.pid, "SIGHUP");
      await until("the warning", () =>
        /tenants: .*subuid is writable by its group or others/.test(b.stderr()),
      );
      report("tenants: subuid file writable by others", { stderr: b.stderr().trim().split("\n").slice(-2) });
    } finally {
      await b.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
