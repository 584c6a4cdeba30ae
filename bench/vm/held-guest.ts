// bench/vm/held-guest.ts: the guest side of bench/vm/held.sh (issue 20, figure 3's second half):
// 10,000 idle workload sessions held by one brokerd whose RLIMIT_NOFILE is what the systemd unit's
// LimitNOFILE= gives it (65,536), which the host cannot show without CAP_SYS_RESOURCE. Runs as root
// in the QEMU guest (a real kernel, every capability); brokerd is its own process on the sim
// backend (a simulated device: the sessions' cost does not depend on the device), with the quotas
// bench/workload/workload.ts sets for one uid holding 10,000 sessions. The clients are
// libvfio-broker programs as uid 65534 with no capabilities: bench/workload's driver-lib `idle`
// (hello + one device open each, nothing mapped) and held-victim.c (grants while they are held).
// Prints "HELD ..." lines and one "HELD-RESULT {json}"; exit 0 only if every session was held and
// the victim's grants read back what they wrote. Never judges latency (TCG); never runs on the host.
//   node bench/dist/vm/held-guest.js [sessions] [victim grants]
// Env (a smoke run outside the guest): HELD_NOFILE (instead of the unit's LimitNOFILE=), HELD_DIR
// (instead of /run/held).
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { AdminService, createClient } from "@vfio-broker/proto";
import { REPO, startBrokerdReady } from "../lib/brokerd.js";

const SESSIONS = Number(process.argv[2] ?? 10000);
const VICTIM_GRANTS = Number(process.argv[3] ?? 200);
const QUOTA = 10240; // as bench/workload/workload.ts: the identity's and brokerd's session caps
const DRIVER = join(REPO, "bench/workload/build/driver-lib");
const VICTIM = join(REPO, "bench/vm/build/held-victim");
const T0 = Date.now();
const log = (m: string) => console.log(`HELD [${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** LimitNOFILE= of the unit brokerd ships with: the limit systemd would give it. */
function unitNofile(): number {
  const unit = readFileSync(join(REPO, "deploy/systemd/vfio-brokerd.service"), "utf8");
  const m = /^LimitNOFILE=(\d+)\s*$/m.exec(unit);
  if (!m) throw new Error("deploy/systemd/vfio-brokerd.service sets no numeric LimitNOFILE=");
  return Number(m[1]);
}
const NOFILE = Number(process.env.HELD_NOFILE ?? unitNofile());
const BASE = process.env.HELD_DIR ?? "/run/held";

const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
function fdKinds(pid: number): { all: number; pidfds: number; sockets: number } {
  const names = readdirSync(`/proc/${pid}/fd`);
  let pidfds = 0;
  let sockets = 0;
  for (const n of names) {
    try {
      const l = readlinkSync(`/proc/${pid}/fd/${n}`);
      if (l === "anon_inode:[pidfd]") pidfds++;
      else if (l.startsWith("socket:")) sockets++;
    } catch {} // closed meanwhile
  }
  return { all: names.length, pidfds, sockets };
}
function nofileOf(pid: number): string {
  const l = readFileSync(`/proc/${pid}/limits`, "utf8")
    .split("\n")
    .find((x) => x.startsWith("Max open files"));
  return (
    l
      ?.split(/\s{2,}/)
      .slice(1, 3)
      .join("/") ?? "?"
  );
}

/** A program as uid 65534 with no capabilities, its RLIMIT_NOFILE (soft and hard) set by root first. */
function asNobody(bin: string, args: string[]): ChildProcess {
  return spawn(
    "prlimit",
    [
      `--nofile=${NOFILE}:${NOFILE}`,
      "--",
      "setpriv",
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
    ].concat(["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", bin, ...args]),
    { stdio: ["pipe", "pipe", "pipe"] },
  );
}

/** Resolves with the child's first stdout line starting with `prefix` (rejects if it exits first). */
function lineOf(p: ChildProcess, prefix: string, what: string): Promise<string> {
  let out = "";
  let err = "";
  p.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  return new Promise((resolve, reject) => {
    p.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const l = out.split("\n").find((x) => x.startsWith(prefix));
      if (l) resolve(l);
    });
    p.once("exit", (c) => reject(new Error(`${what} exited ${c} first: ${err.trim().slice(-400)}`)));
  });
}
const exited = (p: ChildProcess) =>
  p.exitCode !== null ? Promise.resolve(p.exitCode) : new Promise<number | null>((r) => p.once("exit", r));

interface Caps {
  nofile: number;
  sessions: number;
  fdConnections: number;
  pendingMappings: number;
  clientFds: number;
}

/** brokerd as the benchmarks start it (bench/lib/brokerd.ts), under prlimit: its caps and stderr. */
async function brokerd(dir: string): Promise<{ proc: ChildProcess; caps: Caps; stderr: () => string }> {
  mkdirSync(dir);
  const { proc, ready, stderr } = await startBrokerdReady(dir, {
    nofile: NOFILE,
    limits: `{ sessions: ${QUOTA}, fdConnections: ${QUOTA}, deviceFiles: ${QUOTA}, pendingMappings: 512, mappings: 8192 }`,
    args: ["--max-sessions", String(QUOTA), "--max-fd-connections", String(QUOTA), "--tenant-reserve", "0"],
    stderr: "pipe",
  });
  const caps = (JSON.parse(ready) as { caps?: Caps }).caps;
  if (!caps) throw new Error("brokerd's ready line has no caps (an older brokerd?)");
  return { proc, caps, stderr };
}

async function listSessions(dir: string): Promise<{ total: number; nobodyWithDevice: number }> {
  const admin = createClient(AdminService, `unix:${dir}.private/admin.sock`);
  try {
    const r = await admin.listSessions({});
    const nobody = r.sessions.filter((s) => s.identity?.uid === 65534 && s.deviceFiles === 1);
    return { total: r.sessions.length, nobodyWithDevice: nobody.length };
  } finally {
    (admin as unknown as { close(): void }).close();
  }
}

async function main(): Promise<number> {
  const kernel = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
  mkdirSync(BASE, { mode: 0o755 });
  chmodSync(BASE, 0o755); // uid 65534 reaches broker.sock through it
  const dir = join(BASE, "b");
  const bd = await brokerd(dir);
  const pid = bd.proc.pid!;
  const sock = join(dir, "broker.sock");
  log(
    `kernel ${kernel}; RLIMIT_NOFILE ${NOFILE} (the unit's LimitNOFILE=${unitNofile()}); brokerd pid ${pid}`,
  );
  log(`brokerd RLIMIT_NOFILE soft/hard ${nofileOf(pid)}; its caps (ready line): ${JSON.stringify(bd.caps)}`);
  for (const l of bd
    .stderr()
    .split("\n")
    .filter((x) => x.trim()))
    log(`brokerd stderr: ${l}`);
  try {
    // What is made once (code, the epoll set, the device's plan) is there before the count.
    const warm = asNobody(DRIVER, ["idle", sock, "50"]);
    await lineOf(warm, "ready", "driver-lib idle 50");
    warm.stdin!.end();
    await exited(warm);
    await sleep(3000);
    const rss0 = rssKiB(pid);
    const fd0 = fdKinds(pid);
    const held = asNobody(DRIVER, ["idle", sock, String(SESSIONS)]);
    const ready = await lineOf(held, "ready", `driver-lib idle ${SESSIONS}`);
    const openMs = Number(ready.split(" ")[2]);
    await sleep(3000);
    const rss1 = rssKiB(pid);
    const fd1 = fdKinds(pid);
    const perB = ((rss1 - rss0) * 1024) / SESSIONS;
    log(`${SESSIONS} sessions opened in ${(openMs / 1000).toFixed(1)} s (one client process, uid 65534)`);
    log(
      `brokerd fds ${fd0.all} -> ${fd1.all} (pidfds ${fd0.pidfds} -> ${fd1.pidfds}, sockets ${fd0.sockets} -> ${fd1.sockets})`,
    );
    log(
      `brokerd RSS ${(rss0 / 1024).toFixed(1)} -> ${(rss1 / 1024).toFixed(1)} MiB: ${perB.toFixed(0)} B per session`,
    );
    const listed = await listSessions(dir);
    log(
      `AdminService.ListSessions: ${listed.total} sessions, ${listed.nobodyWithDevice} of uid 65534 with a device open`,
    );
    const victim = asNobody(VICTIM, [sock, "sim0", String(VICTIM_GRANTS)]);
    const vline = await lineOf(victim, "{", "held-victim");
    const vrc = await exited(victim);
    const v = JSON.parse(vline) as {
      grants: number;
      verified: number;
      openUs: number;
      p50: number;
      p99: number;
    };
    log(
      `victim (uid 65534, ${SESSIONS} held): ${v.verified}/${v.grants} grants read back; p50 ${v.p50} µs, p99 ${v.p99} µs`,
    );
    const stillHeld = held.exitCode === null && fdKinds(pid).pidfds - fd0.pidfds >= SESSIONS;
    // The sessions closed: brokerd's fds go back to where they were.
    const t = Date.now();
    held.stdin!.end();
    const hrc = await exited(held);
    let fd2 = fdKinds(pid);
    while (fd2.all > fd0.all && Date.now() - t < 300_000) {
      await sleep(500);
      fd2 = fdKinds(pid);
    }
    log(
      `closed: driver exit ${hrc}; brokerd fds back to ${fd2.all} (${fd0.all} before) in ${((Date.now() - t) / 1000).toFixed(1)} s`,
    );
    const ok =
      stillHeld &&
      listed.nobodyWithDevice === SESSIONS &&
      vrc === 0 &&
      v.verified === VICTIM_GRANTS &&
      bd.caps.sessions >= SESSIONS &&
      fd2.all <= fd0.all;
    const result = {
      kernel,
      nofile: NOFILE,
      caps: bd.caps,
      sessions: SESSIONS,
      listed: listed.nobodyWithDevice,
      openS: openMs / 1000,
      fdsBefore: fd0.all,
      fdsHeld: fd1.all,
      fdsPerSession: (fd1.all - fd0.all) / SESSIONS,
      rssMiB: rss1 / 1024,
      rssPerSessionB: Math.round(perB),
      victim: v,
      fdsAfterClose: fd2.all,
      ok,
    };
    console.log(`HELD-RESULT ${JSON.stringify(result)}`);
    return ok ? 0 : 1;
  } finally {
    bd.proc.kill("SIGKILL");
  }
}

main().then(
  (rc) => process.exit(rc),
  (e) => {
    console.log(`HELD error: ${(e as Error).stack ?? e}`);
    process.exit(1);
  },
);
