// Benchmark (issue 12, goal 3): brokerd's JS heap per live mapping, measured exactly: two heap
// snapshots of one brokerd (sim backend, state store and journal on), before and after a client
// holds N delivered mappings, diffed by object kind. RSS (bench/scale/scale.ts) moves with GC
// timing by ±30 %; a snapshot counts every live object. Baseline: the same brokerd before the
// mappings. Usage: node bench/dist/scale/heap.js [mappings]   (default 20000)
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO, startBrokerd } from "../lib/brokerd.js";

const N = Number(process.argv[2] ?? 20000);

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
  nodes: number[];
  strings: string[];
}

/** Bytes and counts of live objects by kind ("object:Mapping", "string", "closure:release", ...). */
function byKind(file: string): Map<string, { bytes: number; count: number }> {
  const s = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const [ti, ni, si] = ["type", "name", "self_size"].map((f) => fields.indexOf(f)) as [
    number,
    number,
    number,
  ];
  const out = new Map<string, { bytes: number; count: number }>();
  for (let i = 0; i < s.nodes.length; i += fields.length) {
    const t = types[s.nodes[i + ti]!]!;
    const k = ["object", "closure", "native"].includes(t) ? `${t}:${s.strings[s.nodes[i + ni]!]}` : t;
    const e = out.get(k) ?? { bytes: 0, count: 0 };
    e.bytes += s.nodes[i + si]!;
    e.count++;
    out.set(k, e);
  }
  return out;
}

const dir = mkdtempSync(join(tmpdir(), "vfio-broker-heap-"));
const snaps = join(dir, "snaps");
mkdirSync(snaps);
const brokerd = await startBrokerd(dir, {
  limits: "{ mappings: 1000000, bytes: 16TiB }",
  node: ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${snaps}`],
});
/** Asks brokerd for a heap snapshot (it GCs first) and waits until the file is complete. */
async function snapshot(): Promise<string> {
  const before = new Set(readdirSync(snaps));
  brokerd.kill("SIGUSR2");
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    const file = readdirSync(snaps).find((f) => !before.has(f));
    if (!file) continue;
    try {
      JSON.parse(readFileSync(join(snaps, file), "utf8"));
      return join(snaps, file);
    } catch {
      // still being written
    }
  }
}
try {
  await new Promise((r) => setTimeout(r, 500));
  const base = byKind(await snapshot());
  const holder = spawn(
    process.execPath,
    [join(REPO, "bench/dist/scale/holder.js"), join(dir, "broker.sock"), "mappings", String(N)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve) =>
    holder.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve()),
  );
  const full = byKind(await snapshot());
  holder.kill("SIGKILL");
  const rows = [...full].map(([k, e]) => {
    const b = base.get(k) ?? { bytes: 0, count: 0 };
    return { k, bytes: (e.bytes - b.bytes) / N, count: (e.count - b.count) / N };
  });
  const total = rows.reduce((s, r) => s + r.bytes, 0);
  console.log(`heap: brokerd's JS heap per live mapping, ${N} delivered mappings, node ${process.version}`);
  console.log("| object kind | bytes per mapping | objects per mapping |");
  console.log("|---|---|---|");
  for (const r of rows.sort((a, b) => b.bytes - a.bytes).slice(0, 12))
    console.log(`| ${r.k} | ${r.bytes.toFixed(1)} | ${r.count.toFixed(2)} |`);
  console.log(
    `goal 3 (memory per live mapping, JS heap): ${total.toFixed(0)} B (goal 1024 B: ${total <= 1024 ? "met" : "missed"}; baseline: the same brokerd before the mappings)`,
  );
} finally {
  brokerd.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
