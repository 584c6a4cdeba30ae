// Benchmark (issue 12, goal 3): brokerd's JS heap per live mapping, measured exactly: two heap
// snapshots of one brokerd (sim backend, state store and journal on), before and after a client
// holds N delivered mappings, diffed by object kind. RSS (bench/scale/scale.ts) moves with GC
// timing by ±30 %; a snapshot counts every live object. Baseline: the same brokerd before the
// mappings. Usage: node bench/dist/scale/heap.js [mappings]   (default 20000)
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO, startBrokerd } from "../lib/brokerd.js";
import { byKind, perItem, snapshot } from "../lib/heap-snapshot.js";

const N = Number(process.argv[2] ?? 20000);

const dir = mkdtempSync(join(tmpdir(), "vfio-broker-heap-"));
const snaps = join(dir, "snaps");
mkdirSync(snaps);
const brokerd = await startBrokerd(dir, {
  limits: "{ mappings: 1000000, bytes: 16TiB }",
  node: ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${snaps}`],
});
try {
  await new Promise((r) => setTimeout(r, 500));
  const base = byKind(await snapshot(brokerd, snaps));
  const holder = spawn(
    process.execPath,
    [join(REPO, "bench/dist/scale/holder.js"), join(dir, "broker.sock"), "mappings", String(N)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve) =>
    holder.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve()),
  );
  const full = byKind(await snapshot(brokerd, snaps));
  holder.kill("SIGKILL");
  const rows = perItem(base, full, N);
  const total = rows.reduce((s, r) => s + r.bytes, 0);
  console.log(`heap: brokerd's JS heap per live mapping, ${N} delivered mappings, node ${process.version}`);
  console.log("| object kind | bytes per mapping | objects per mapping |");
  console.log("|---|---|---|");
  for (const r of rows.slice(0, 12))
    console.log(`| ${r.k} | ${r.bytes.toFixed(1)} | ${r.count.toFixed(2)} |`);
  console.log(
    `goal 3 (memory per live mapping, JS heap): ${total.toFixed(0)} B (goal 1024 B: ${total <= 1024 ? "met" : "missed"}; baseline: the same brokerd before the mappings)`,
  );
} finally {
  brokerd.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
