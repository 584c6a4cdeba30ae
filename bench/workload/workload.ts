// Benchmark (issue 20, item 4): C workloads on the workload protocol, each figure against a C floor
// of the same exchange measured in the same run. The C programs are bench/workload/*.c (built here
// with `make -C bench/workload`): driver-lib grants through libvfio-broker's public API
// (vfio-broker.h), driver-raw speaks the frames itself (wire.c), and floor-server is the floor: a
// single-threaded epoll C server answering the same frames (protobuf-c decode and encode, the
// memfd passed with SCM_RIGHTS) with no policy, state or journal.
//   1. single grant (map 4 KiB WC of region 2 + one write + unmap, the release awaited), one
//      session: p50 against the floor's p50 measured in the same round (5 rounds, floor then
//      clients; the median ratio and its range);
//   2. grants/s from 64 sessions (16 processes x 4 threads, one session each), with brokerd's CPU
//      per grant (utime+stime from /proc/<pid>/stat over the run), against the same 64 sessions on
//      the floor server; each server first gets the same load for WARM_SECONDS, not counted (a
//      fresh brokerd's first seconds under 64 sessions are JIT warm-up: 6,000-10,000 grants/s,
//      then 8,000-13,000, BENCHMARKS.md), printed on a line of its own;
//   3. brokerd RSS per idle session (hello + one device open, nothing mapped) over 2,000 sessions on
//      a fresh brokerd, against the floor server's; then 10,000 sessions held at once by a brokerd
//      whose RLIMIT_NOFILE is 65,536 (or as many as fit under this machine's hard limit); and where
//      an idle session's memory is, from two heap snapshots of a third fresh brokerd.
// The C clients and the floor server run as uid 65534 when the bench runs as root.
// brokerd runs as its own process (sim backend, state store and journal on, as bench/lib/brokerd.ts
// starts it), with its session quotas raised for one uid holding 10,000 sessions: the policy's
// limits (sessions and fdConnections 10,240 for the identity) and --max-sessions,
// --max-fd-connections 10,240 with --tenant-reserve 0 (one tenant here).
// Usage: node bench/dist/workload/workload.js [grants] [seconds] [idle] [held]
//        (default 20000 5 2000 10000)
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO, startBrokerd } from "../lib/brokerd.js";
import { byKind, perItem, snapshot } from "../lib/heap-snapshot.js";
import { freePort, heapDelta, heapSpaces } from "../lib/heap-spaces.js";
import { AS, AS_WHO, B, finished, run, tput as runTput, started, type Tput, W } from "./drivers.js";

const GRANTS = Number(process.argv[2] ?? 20000);
const SECONDS = Number(process.argv[3] ?? 5);
/** Figure 2's warm-up per server, not counted (VFIO_BENCH_WARM_SECONDS; 0: none). */
const WARM_SECONDS = Number(process.env.VFIO_BENCH_WARM_SECONDS ?? 3);
const IDLE = Number(process.argv[4] ?? 2000);
const ROUNDS = 5;
const PROCS = 16;
const THREADS = 4;
const QUOTA = 10240;
const SAMPLES = 3;

/** This process's hard RLIMIT_NOFILE: without CAP_SYS_RESOURCE no child gets more. */
function hardNofile(): number {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  const n = Number(line?.split(/\s{2,}/)[2]);
  return Number.isInteger(n) && n > 0 ? n : 1024;
}
const NOFILE = Math.min(65536, hardNofile());
// A workload session holds 2 fds in brokerd (socket and pidfd: fd-budget.ts) and its fd-channel
// connection counts once more against the same budget; brokerd keeps 512 + 320 fds for itself and
// 512 for pending mappings. Where the limit is below 65,536, as many as fit are held (the VM guest
// shows 10,000 under 65,536: bench/vm/held.sh).
const FIT = Math.floor((NOFILE - 512 - 320 - 512) / 3) - 64;
const HELD = Math.min(Number(process.argv[5] ?? 10000), FIT);

interface Latency {
  client: string;
  p50: number;
  p99: number;
  mean: number;
  serverCpuUs: number;
}

/** 64 sessions granting for `seconds` after a common start; pid: the server whose CPU is read. */
const tput = (bin: string, socket: string, pid: number, seconds = SECONDS): Promise<Tput> =>
  runTput(bin, socket, pid, seconds, PROCS, THREADS);

const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The same driver opening and closing a few sessions first, so what is created once is there. */
async function warmUp(bin: string, socket: string) {
  const warm = await started(bin, ["idle", socket, "50"]);
  warm.proc.stdin!.end();
  await finished(warm.proc).catch(() => {});
  await sleep(1000);
}

/** Holds n more idle sessions; after 1 s, the server's RSS then (and its heap by space, if port). */
async function hold(bin: string, socket: string, pid: number, n: number, port?: number) {
  const held = await started(bin, ["idle", socket, String(n)]);
  await sleep(1000);
  // RSS first: the scrape allocates in brokerd.
  const rss = rssKiB(pid);
  return {
    openMs: Number(held.line.split(" ")[2]),
    rss,
    fds: fdCount(pid),
    heap: port ? await heapSpaces(port) : undefined,
    close: async () => {
      const done = finished(held.proc).catch(() => "");
      held.proc.stdin!.end();
      await done;
    },
  };
}

/** Holds n idle sessions; resolves with how long opening them took and the server's RSS then. */
async function idle(bin: string, socket: string, pid: number, n: number, baseKiB?: number) {
  await warmUp(bin, socket);
  const before = baseKiB ?? rssKiB(pid);
  const h = await hold(bin, socket, pid, n);
  return { ...h, before, perSessionB: ((h.rss - before) * 1024) / n, rssMiB: h.rss / 1024 };
}

async function floorServer(dir: string): Promise<{ proc: ChildProcess; socket: string }> {
  // A directory of the floor server's own uid for its socket.
  const home = join(dir, "floor");
  mkdirSync(home);
  if (AS.uid !== undefined) chownSync(home, AS.uid, AS.gid ?? AS.uid);
  const socket = join(home, "floor.sock");
  const proc = spawn(join(B, "floor-server"), [socket], {
    ...AS,
    stdio: ["pipe", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.once("data", () => resolve());
    proc.once("exit", (c) => reject(new Error(`floor-server exited ${c}`)));
  });
  return { proc, socket };
}

async function brokerd(dir: string, node: string[] = [], args: string[] = []): Promise<ChildProcess> {
  mkdirSync(dir);
  return startBrokerd(dir, {
    node,
    nofile: NOFILE,
    limits: `{ sessions: ${QUOTA}, fdConnections: ${QUOTA}, deviceFiles: ${QUOTA}, pendingMappings: 512, mappings: 8192 }`,
    args: [
      ...["--max-sessions", String(QUOTA), "--max-fd-connections", String(QUOTA), "--tenant-reserve", "0"],
      ...args,
    ],
  });
}

const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);

execFileSync("make", ["-s", "-C", W], { stdio: "inherit" });
/** The library-backed driver, if the library's session API is in this tree and links. */
function buildLib(): boolean {
  const header = readFileSync(join(REPO, "clients/c/include/vfio-broker.h"), "utf8");
  if (!/\bint vfb_connect\s*\(/.test(header)) return false;
  try {
    execFileSync("make", ["-s", "-C", W, "lib"], { stdio: "inherit" });
    return true;
  } catch {
    console.log("(driver-lib did not build against clients/c/build: see make's output above)");
    return false;
  }
}
const lib = buildLib();
const clients = lib ? ["driver-lib", "driver-raw"] : ["driver-raw"];
const name = (bin: string) => (bin === "driver-lib" ? "libvfio-broker" : "raw frames (wire.c)");

const dir = mkdtempSync(join(tmpdir(), "vfio-broker-wl-"));
chmodSync(dir, 0o755); // the clients' uid reaches the sockets inside
const floor = await floorServer(dir);
let bd = await brokerd(join(dir, "b1"));
try {
  console.log(
    `workload: C clients on the workload protocol, brokerd as its own process (sim, state store + journal), node ${process.version}; the C clients and the floor server as ${AS_WHO}`,
  );
  if (!lib) console.log("(libvfio-broker's session API is not in this tree: raw-frame client only)");
  const fd = join(dir, "b1", "fd.sock");
  const sockOf = (bin: string) => (bin === "driver-lib" ? join(dir, "b1", "broker.sock") : fd);

  // ---- 1. single grant -------------------------------------------------------------------------
  // In ROUNDS rounds, the floor then each client, GRANTS / ROUNDS grants each: a round's ratio is
  // taken under the same load on this shared machine (a floor run minutes apart was 4x off).
  const fp = String(floor.proc.pid);
  const per = String(Math.ceil(GRANTS / ROUNDS));
  const rounds: { floor: Latency; of: Latency[] }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const fr = run<Latency>("driver-raw", ["latency", floor.socket, per, fp]);
    rounds.push({
      floor: fr,
      of: clients.map((c) => run<Latency>(c, ["latency", sockOf(c), per, String(bd.pid)])),
    });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const range = (xs: number[]) => `${f2(Math.min(...xs))}-${f2(Math.max(...xs))}`;
  console.log(
    `\n1. single grant (map 4 KiB WC + write + unmap, release awaited), ${ROUNDS} rounds of ${per} each: medians over the rounds`,
  );
  console.log(
    "| client -> server | p50 µs | p99 µs | p50 / the round's floor (range) | server CPU µs / grant |",
  );
  console.log("|---|---|---|---|---|");
  const lrow = (what: string, ls: Latency[], ratio: string) =>
    console.log(
      `| ${what} | ${f1(median(ls.map((l) => l.p50)))} | ${f1(median(ls.map((l) => l.p99)))} | ${ratio} | ${f1(median(ls.map((l) => l.serverCpuUs)))} |`,
    );
  lrow(
    "raw frames -> C floor (floor-server)",
    rounds.map((r) => r.floor),
    "",
  );
  const ratios = clients.map((_, k) => rounds.map((r) => r.of[k]!.p50 / r.floor.p50));
  clients.forEach((c, k) => {
    const rk = ratios[k]!;
    lrow(
      `${name(c)} -> brokerd`,
      rounds.map((r) => r.of[k]!),
      `${f2(median(rk))}x (${range(rk)})`,
    );
  });
  const r0 = median(ratios[0]!);
  console.log(
    `goal: ${name(clients[0]!)} grant p50 <= 3x the floor: ${f2(r0)}x, median of ${ROUNDS} rounds (${r0 <= 3 ? "met" : "missed"})`,
  );

  // ---- 2. throughput ---------------------------------------------------------------------------
  console.log(`\n2. grants/s, ${PROCS} processes x ${THREADS} threads (one session each), ${SECONDS} s`);
  console.log(
    "| client -> server | grants/s | p50 µs | p99 µs | server CPU (cores) | server CPU µs / grant | client CPU µs / grant |",
  );
  console.log("|---|---|---|---|---|---|---|");
  const row = (what: string, t: Tput) =>
    console.log(
      `| ${what} | ${t.perS.toFixed(0)} | ${f1(t.p50)} | ${f1(t.p99)} | ${(t.serverCpuS / t.seconds).toFixed(2)} | ${f1((t.serverCpuS * 1e6) / t.grants)} | ${f1((t.clientCpuS * 1e6) / t.grants)} |`,
    );
  const warm = async (bin: string, socket: string, pid: number, what: string) => {
    if (WARM_SECONDS <= 0) return;
    const w = await tput(bin, socket, pid, WARM_SECONDS);
    console.log(`(warm-up, not counted: ${what}, ${WARM_SECONDS} s, ${w.perS.toFixed(0)} grants/s)`);
  };
  await warm("driver-raw", floor.socket, floor.proc.pid!, "raw frames -> C floor");
  const tf = await tput("driver-raw", floor.socket, floor.proc.pid!);
  row("raw frames -> C floor (floor-server)", tf);
  const tps: Tput[] = [];
  for (const c of clients) {
    await warm(c, sockOf(c), bd.pid!, `${name(c)} -> brokerd`);
    const t = await tput(c, sockOf(c), bd.pid!);
    tps.push(t);
    row(`${name(c)} -> brokerd`, t);
  }
  console.log(
    `goal: >= 10,000 grants/s (${name(clients[0]!)}): ${tps[0]!.perS.toFixed(0)}/s (${tps[0]!.perS >= 10000 ? "met" : "missed"}; the floor server: ${tf.perS.toFixed(0)}/s)`,
  );

  // ---- 3. idle sessions ------------------------------------------------------------------------
  // SAMPLES fresh brokerds (with their /metrics on loopback, as brokerd runs by default), each:
  // IDLE sessions opened after a warm-up, RSS 1 s later minus before, its V8 heap by space from
  // /metrics; then IDLE more: the marginal RSS per session from IDLE to 2 x IDLE sessions.
  bd.kill("SIGKILL");
  if (IDLE > 0 || HELD > 0) {
    console.log(
      `\n3. idle sessions (hello + one device open, nothing mapped); brokerd RLIMIT_NOFILE ${NOFILE}`,
    );
    console.log("| server | sessions | open all, ms | RSS per session | fds |");
    console.log("|---|---|---|---|---|");
  }
  const cl = clients[0]!;
  const sockIn = (d: string) => (cl === "driver-lib" ? join(d, "broker.sock") : join(d, "fd.sock"));
  let fi: Awaited<ReturnType<typeof idle>> | undefined;
  if (IDLE > 0) {
    fi = await idle("driver-raw", floor.socket, floor.proc.pid!, IDLE);
    console.log(
      `| C floor (floor-server) | ${IDLE} | ${f1(fi.openMs)} | ${f1(fi.perSessionB)} B | ${fi.fds} |`,
    );
    await fi.close();
  }
  const perIdle: number[] = [];
  const marginal: number[] = [];
  for (let k = 0; k < (IDLE > 0 ? SAMPLES : 0); k++) {
    bd.kill("SIGKILL");
    const port = await freePort();
    const d = join(dir, `i${k}`);
    bd = await brokerd(d, [], ["--metrics", `127.0.0.1:${port}`]);
    const sock = sockIn(d);
    await warmUp(cl, sock);
    const h0 = await heapSpaces(port);
    const before = rssKiB(bd.pid!);
    const a = await hold(cl, sock, bd.pid!, IDLE, port);
    const pb = ((a.rss - before) * 1024) / IDLE;
    perIdle.push(pb);
    console.log(`| brokerd, sample ${k + 1} | ${IDLE} | ${f1(a.openMs)} | ${f1(pb)} B | ${a.fds} |`);
    console.log(
      `|   by heap space, per session: ${heapDelta(h0, a.heap!, (a.rss - before) * 1024, IDLE)
        .map((r) => `${r.what} ${f1(r.committed)} B${Number.isNaN(r.used) ? "" : ` (used ${f1(r.used)})`}`)
        .join("; ")} | | | |`,
    );
    if (2 * IDLE <= FIT) {
      const m = await hold(cl, sock, bd.pid!, IDLE, port);
      marginal.push(((m.rss - a.rss) * 1024) / IDLE);
      console.log(
        `| brokerd, sample ${k + 1}, ${IDLE} more: RSS per session from ${IDLE} to ${2 * IDLE} | ${2 * IDLE} | ${f1(m.openMs)} | ${f1(marginal.at(-1)!)} B | ${m.fds} |`,
      );
      console.log(
        `|   by heap space, per session: ${heapDelta(a.heap!, m.heap!, (m.rss - a.rss) * 1024, IDLE)
          .map((r) => `${r.what} ${f1(r.committed)} B`)
          .join("; ")} | | | |`,
      );
      await m.close();
    }
    await a.close();
  }
  if (HELD > 0) {
    // On a fresh brokerd (with the sessions above closed, what they left behind would count).
    bd.kill("SIGKILL");
    bd = await brokerd(join(dir, "held"));
    const bh = await idle(cl, sockIn(join(dir, "held")), bd.pid!, HELD);
    console.log(
      `| brokerd | ${HELD} | ${f1(bh.openMs)} | ${f1(bh.perSessionB)} B (RSS ${f1(bh.rssMiB)} MiB) | ${bh.fds} |`,
    );
    await bh.close();
    console.log(
      `goal: ${HELD} sessions held under a ${NOFILE}-fd limit: ${bh.fds >= HELD ? "met" : "missed"} (${bh.fds} fds open in brokerd)`,
    );
  }

  if (IDLE > 0) {
    // Where an idle session's memory is: brokerd's live JS objects (heap snapshots, garbage
    // collected first) before and after the same idle sessions, on another fresh brokerd.
    bd.kill("SIGKILL");
    const snaps = join(dir, "snaps");
    mkdirSync(snaps);
    bd = await brokerd(join(dir, "b3"), ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${snaps}`]);
    const sock3 = sockIn(join(dir, "b3"));
    const warm = await started(cl, ["idle", sock3, "50"]);
    warm.proc.stdin!.end();
    await finished(warm.proc).catch(() => {});
    const base = byKind(await snapshot(bd, snaps));
    const hs = await started(cl, ["idle", sock3, String(IDLE)]);
    const rows = perItem(base, byKind(await snapshot(bd, snaps)), IDLE);
    const doneH = finished(hs.proc).catch(() => "");
    hs.proc.stdin!.end();
    await doneH;
    const heap = rows.reduce((t, r) => t + r.bytes, 0);
    console.log(`\nbrokerd's JS heap per idle session (${IDLE} sessions, heap snapshots): ${f1(heap)} B`);
    console.log("| object kind | bytes per session | objects per session |");
    console.log("|---|---|---|");
    for (const r of rows.slice(0, 12)) console.log(`| ${r.k} | ${f1(r.bytes)} | ${r.count.toFixed(2)} |`);
    const worst = Math.max(...perIdle);
    console.log(
      `goal: <= 4 KiB brokerd RSS per idle session over ${IDLE}: ${perIdle.map(f1).join(", ")} B in ${perIdle.length} samples (${worst <= 4096 ? "met" : "missed"}; the floor server: ${f1(fi!.perSessionB)} B)` +
        (marginal.length ? `; marginal, ${IDLE} to ${2 * IDLE}: ${marginal.map(f1).join(", ")} B` : ""),
    );
  }
} finally {
  bd.kill("SIGKILL");
  floor.proc.kill("SIGKILL");
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
}
