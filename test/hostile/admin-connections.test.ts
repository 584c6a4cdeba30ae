// The console port against a local user who opens connections and never uses them: 15,000 of
// them (as many as the fd limit allows), each reopened as soon as it is closed, as uid 65534,
// while the operator polls GET /api/v1/devices with the token (keep-alive, as the console page
// does) and also opens a fresh connection every second. The console used to keep every one of
// them (no cap, 72 s keep-alive, no header timeout): now each uid holds at most 64, all at most
// 256, and silent or slow connections are closed within seconds. The operator keeps 100 %.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { type Admin, type Brokerd, startBrokerd, tempDir } from "../observability/support/processes.js";
import { startAdminWith } from "./support/admin-stack.js";
import { attacker, report } from "./support/harness.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
/** As many connections as the attacker's fd limit allows, up to 15,000 (it keeps 200 for itself). */
const CONNECTIONS = Math.min(
  15_000,
  Number(
    /Max open files\s+(\d+)/.exec((await import("node:fs")).readFileSync("/proc/self/limits", "utf8"))?.[1] ??
      1024,
  ) - 200,
);

describe("hostile: connections to the console port", () => {
  const tmp = tempDir("vfio-hostile-console-");
  let brokerd: Brokerd;
  let admin: Admin;
  before(async () => {
    brokerd = await startBrokerd(tmp.path);
    admin = await startAdminWith(brokerd.adminSocket, tmp.path);
  });
  after(async () => {
    await admin?.stop();
    await brokerd?.stop();
    tmp.remove();
  });

  it(`${CONNECTIONS} idle connections from uid 65534: the operator's polls all succeed, the console's fds stay bounded`, {
    timeout: 180_000,
  }, async () => {
    const port = Number(new URL(admin.url).port);
    const pid = admin.child.pid!;
    const baseline = fds(pid);
    const a = attacker("hold-connections", [`tcp:127.0.0.1:${port}`, String(CONNECTIONS), "25000"]);
    let peakFds = 0;
    const sampler = setInterval(() => {
      try {
        peakFds = Math.max(peakFds, fds(pid));
      } catch {
        /* gone: the polls say so */
      }
    }, 100);
    await sleep(3000); // the attack in place
    const devices = new URL("/api/v1/devices", admin.url);
    const auth = { authorization: `Bearer ${admin.token}` };
    const poll = async (fresh: boolean) => {
      const t0 = performance.now();
      try {
        const r = await fetch(devices, {
          headers: fresh ? { ...auth, connection: "close" } : auth,
          signal: AbortSignal.timeout(10_000),
        });
        const body = await r.text();
        return {
          ok: r.status === 200 && body.includes("sim0"),
          ms: performance.now() - t0,
          why: `${r.status}`,
        };
      } catch (e) {
        return { ok: false, ms: performance.now() - t0, why: (e as Error).message };
      }
    };
    const kept = { polls: 0, ok: 0, maxMs: 0, errors: [] as string[] };
    const fresh = { polls: 0, ok: 0, maxMs: 0, errors: [] as string[] };
    const end = Date.now() + 15_000;
    // Two operators at once: one polling over its kept connection every 100 ms (the console page
    // does every second), one opening a new connection every second.
    const loop = async (isFresh: boolean, everyMs: number) => {
      const tally = isFresh ? fresh : kept;
      while (Date.now() < end) {
        const r = await poll(isFresh);
        tally.polls++;
        tally.maxMs = Math.max(tally.maxMs, Math.round(r.ms));
        if (r.ok) tally.ok++;
        else if (tally.errors.length < 5) tally.errors.push(r.why);
        await sleep(everyMs);
      }
    };
    await Promise.all([loop(false, 100), loop(true, 1000)]);
    const during = fds(pid);
    a.kill("SIGTERM");
    const r = (await a.result()) as { opened: number; closedByBroker: number; heldAtEnd: number };
    clearInterval(sampler);
    report("console connections", {
      connections: CONNECTIONS,
      attacker: r,
      operatorKeepAlive: kept,
      operatorFresh: fresh,
      adminFds: { baseline, during, peak: peakFds },
    });
    assert.ok(r.opened >= CONNECTIONS, `the attacker opened only ${r.opened}`);
    assert.ok(kept.polls >= 5 && fresh.polls >= 3, `too few polls: ${kept.polls} and ${fresh.polls}`);
    assert.equal(
      kept.ok,
      kept.polls,
      `operator polls (keep-alive): ${kept.ok}/${kept.polls}: ${kept.errors.join("; ")}`,
    );
    assert.equal(
      fresh.ok,
      fresh.polls,
      `operator polls (new connection): ${fresh.ok}/${fresh.polls}: ${fresh.errors.join("; ")}`,
    );
    assert.ok(
      peakFds <= baseline + 256 + 16 + 32,
      `the console held up to ${peakFds} fds (baseline ${baseline})`,
    );
  });
});
