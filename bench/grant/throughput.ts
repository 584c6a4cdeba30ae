// Benchmark (issue 12, goal 2): aggregate grants/s with 64 concurrent clients, each its own process,
// against one brokerd (sim backend, state store and journal on), on this machine's cores. Each
// client grants in a loop (map 4 KiB WC + write32 + release) for the same window after a common
// start: release awaited, release riding in the next grant's FdBatch, and mapMany batches of 8
// and 32 (a workload start-up's several BARs) whose releases ride in the next batch. Baseline
// from the same run: the same 64 processes doing bare fd-channel round trips (no
// fd, no grant): what 64 Node clients and brokerd's event loop can exchange at all here. Prints
// the aggregate, the clients' p50/p99, brokerd's CPU share (utime+stime over the window), and the
// goal of 10,000 grants/s. Usage: node bench/dist/grant/throughput.js [clients] [seconds]
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startBrokerd } from "../lib/brokerd.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const CLIENTS = Number(process.argv[2] ?? 64);
const SECONDS = Number(process.argv[3] ?? 5);
const TICKS = 100; // USER_HZ

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return Number(rest[11]) + Number(rest[12]);
}

async function round(dir: string, brokerd: ChildProcess, mode: string) {
  const workers = Array.from({ length: CLIENTS }, (_, i) =>
    spawn(
      process.execPath,
      [join(HERE, "worker.js"), join(dir, "broker.sock"), String(i), String(SECONDS), mode],
      {
        stdio: ["pipe", "pipe", "inherit"],
      },
    ),
  );
  const outs = workers.map((w) => {
    let out = "";
    w.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    return () => out;
  });
  const t0 = Date.now();
  while (!outs.every((o) => o().includes("ready"))) {
    if (Date.now() - t0 > 120_000) throw new Error("workers did not get ready");
    await new Promise((r) => setTimeout(r, 50));
  }
  const cpu0 = cpuTicks(brokerd.pid!);
  const w0 = performance.now();
  for (const w of workers) w.stdin!.write("go\n");
  await Promise.all(workers.map((w) => new Promise((r) => w.once("exit", r))));
  const wallS = (performance.now() - w0) / 1000;
  const cpuS = (cpuTicks(brokerd.pid!) - cpu0) / TICKS;
  const res = outs.map(
    (o) =>
      JSON.parse(o().trim().split("\n").pop()!) as { n: number; grants: number; p50: number; p99: number },
  );
  // Round trips for the baseline, grants otherwise (a batch8 step is 8 grants).
  const n = res.reduce((s, r) => s + (mode === "rt" ? r.n : r.grants), 0);
  const p99 = res.map((r) => r.p99).sort((a, b) => a - b)[Math.floor(res.length * 0.99)]!;
  const p50 = res.map((r) => r.p50).sort((a, b) => a - b)[res.length >> 1]!;
  return { perS: n / SECONDS, p50, p99, brokerdCpu: cpuS / wallS };
}

const dir = mkdtempSync(join(tmpdir(), "vfio-broker-tput-"));
const brokerd = await startBrokerd(dir, {
  limits: "{ sessions: 512, fdConnections: 1024, deviceFiles: 512, pendingMappings: 512, mappings: 8192 }",
});
try {
  console.log(`throughput: ${CLIENTS} client processes, ${SECONDS} s each round, node ${process.version}`);
  console.log("| round | ops/s | client p50 µs | client p99 µs | brokerd CPU (cores) |");
  console.log("|---|---|---|---|---|");
  const rows: [string, Awaited<ReturnType<typeof round>>][] = [];
  for (const mode of ["rt", "fast", "later", "batch8", "batch32", "grpc"]) {
    const r = await round(dir, brokerd, mode);
    rows.push([mode, r]);
    const name = {
      rt: "baseline: fd-channel round trips (no fd)",
      fast: "grants, fast path, release awaited",
      later: "grants, fast path, release rides in the next grant's batch",
      batch8: "grants, mapMany of 8 (per-step µs), releases in the next batch",
      batch32: "grants, mapMany of 32 (per-step µs), releases in the next batch",
      grpc: "grants, gRPC path",
    }[mode];
    console.log(
      `| ${name} | ${Math.round(r.perS)} | ${r.p50.toFixed(0)} | ${r.p99.toFixed(0)} | ${r.brokerdCpu.toFixed(2)} |`,
    );
  }
  const rt = rows[0]![1];
  for (const [mode, r] of rows.slice(1, 5))
    console.log(
      `goal 2 (throughput), ${mode}: ${Math.round(r.perS)} grants/s with ${CLIENTS} clients = ${(r.perS / 10_000).toFixed(2)}x the goal of 10,000 ` +
        `(${r.perS >= 10_000 ? "met" : "missed"}); ${(r.perS / rt.perS).toFixed(2)}x the bare fd-channel round trips of the same processes; ` +
        `brokerd used ${r.brokerdCpu.toFixed(2)} cores, p99 ${r.p99.toFixed(0)} µs`,
    );
} finally {
  brokerd.kill("SIGTERM");
  await new Promise((r) => brokerd.once("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
