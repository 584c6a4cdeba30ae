// A change to brokerd's grant path against the tree it started from (issue 20, item 4): figure 2's
// load (64 libvfio-broker sessions, 16 processes x 4 threads, one grant at a time each) on fresh
// brokerds of this tree and of another built tree, alternately, in the same minutes, so both see
// the same machine. Each brokerd gets RUNS runs of SECONDS back to back: the first shows a fresh
// brokerd (JIT warm-up), the later ones a warm one. Prints every run (grants/s, brokerd CPU µs per
// grant, and the bytes its scavenges freed per grant, from node --trace-gc: what a grant leaves for
// the GC), then the medians of both trees and their ratio. It owns this comparison only; the
// figures against the C floor are workload.ts's.
// Usage: node bench/dist/workload/compare.js OTHER_TREE [pairs] [runs] [seconds]
//        (default 6 4 2; OTHER_TREE: a checkout of another commit with `npm ci` run in it)
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { REPO } from "../lib/brokerd.js";
import { tput, W } from "./drivers.js";

const OTHER = resolve(process.argv[2] ?? "");
const PAIRS = Number(process.argv[3] ?? 6);
const RUNS = Number(process.argv[4] ?? 4);
const SECONDS = Number(process.argv[5] ?? 2);
const QUOTA = 1024;

if (!process.argv[2] || !existsSync(join(OTHER, "bench/dist/lib/brokerd.js"))) {
  console.error("usage: compare.js OTHER_TREE [pairs] [runs] [seconds]: OTHER_TREE must be a built checkout");
  process.exit(2);
}
execFileSync("make", ["-s", "-C", W], { stdio: "inherit" });
execFileSync("make", ["-s", "-C", W, "lib"], { stdio: "inherit" });

interface Run {
  perS: number;
  us: number;
  /** Bytes the young generation's scavenges freed during the run, per grant. */
  garbage: number;
}

/** MB freed by the scavenges in --trace-gc output ("Scavenge 5.1 (7.2) -> 4.3 (8.0) MB"). */
function scavenged(text: string): number {
  let mb = 0;
  for (const m of text.matchAll(/Scavenge(?: \(interleaved\))? ([\d.]+) \([\d.]+\) -> ([\d.]+)/g))
    mb += Number(m[1]) - Number(m[2]);
  return mb;
}

/** One fresh brokerd of `tree`, RUNS runs of the 64-session load, then killed. */
async function brokerdRuns(tree: string): Promise<Run[]> {
  // Each tree's own starter: the flags and arguments that tree runs brokerd with.
  const { startBrokerd } = (await import(
    pathToFileURL(join(tree, "bench/dist/lib/brokerd.js")).href
  )) as typeof import("../lib/brokerd.js");
  const dir = mkdtempSync(join(tmpdir(), "vfio-broker-compare-"));
  chmodSync(dir, 0o755); // the clients' uid reaches the sockets
  const run = join(dir, "b");
  mkdirSync(run);
  const bd = await startBrokerd(run, {
    node: ["--trace-gc"],
    limits: `{ sessions: ${QUOTA}, fdConnections: ${QUOTA}, deviceFiles: ${QUOTA}, pendingMappings: 512, mappings: 8192 }`,
    args: ["--max-sessions", String(QUOTA), "--max-fd-connections", String(QUOTA), "--tenant-reserve", "0"],
  });
  let gc = "";
  bd.stdout!.on("data", (d: Buffer) => {
    gc += d.toString();
  });
  try {
    const out: Run[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = await tput("driver-lib", join(run, "broker.sock"), bd.pid!, SECONDS, 16, 4, () => {
        gc = ""; // from here: the scavenges of this run's grants
      });
      const garbage = (scavenged(gc) * 1048576) / t.grants;
      out.push({ perS: t.perS, us: (t.serverCpuS * 1e6) / t.grants, garbage });
    }
    return out;
  } finally {
    bd.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const trees = { this: REPO, other: OTHER };
const got: Record<keyof typeof trees, Run[][]> = { this: [], other: [] };
console.log(`this tree ${REPO}, other ${OTHER}: ${PAIRS} pairs, ${RUNS} runs of ${SECONDS} s per brokerd`);
for (let k = 0; k < PAIRS; k++) {
  const order: (keyof typeof trees)[] = k % 2 ? ["this", "other"] : ["other", "this"];
  for (const t of order) {
    const r = await brokerdRuns(trees[t]);
    got[t].push(r);
    console.log(
      `${t.padEnd(5)} ${r.map((x) => `${x.perS.toFixed(0)}/s ${x.us.toFixed(0)} µs ${(x.garbage / 1024).toFixed(1)} KB`).join("  ")}`,
    );
  }
}
const sum = (t: keyof typeof trees) => ({
  first: median(got[t].map((r) => r[0]!.us)),
  later: median(got[t].flatMap((r) => r.slice(1).map((x) => x.us))),
  perS: median(got[t].flatMap((r) => r.slice(1).map((x) => x.perS))),
  garbage: median(got[t].flatMap((r) => r.slice(1).map((x) => x.garbage))),
});
const a = sum("this");
const b = sum("other");
for (const [t, s] of [
  ["this", a],
  ["other", b],
] as const)
  console.log(
    `${t}: fresh brokerd's first run ${s.first.toFixed(0)} µs/grant; later runs ${s.later.toFixed(0)} µs/grant, ${s.perS.toFixed(0)} grants/s, ${(s.garbage / 1024).toFixed(1)} KB scavenged per grant (medians)`,
  );
console.log(
  `this / other: first run ${(a.first / b.first).toFixed(2)}x the CPU per grant, later runs ${(a.later / b.later).toFixed(2)}x, grants/s ${(a.perS / b.perS).toFixed(2)}x`,
);
