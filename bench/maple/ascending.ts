// Benchmark (issue 12, goal 6): the MapleTree under the pattern DeviceFiles really have. A device
// file allocates each mapping's cookie as the lowest free page-aligned range at or above its alias
// base (allocRange), stores it there, and erases it at release: with n live mappings packed from
// the base, every new one lands just after the last. Measured: ns per allocRange + insert + erase
// cycle at n = 1e3 .. 1e6 live mappings, and the growth from 1e3 to 1e6 (goal < 3x). Baseline:
// a load hit at the same n (the tree's own cost of one descent). Usage: node bench/dist/maple/ascending.js
import { MapleTree } from "@vfio-broker/brokerd/maple/index";

const PAGE = 4096n;
const BASE = 1n << 40n;

function build(n: number): MapleTree<number> {
  const t = new MapleTree<number>();
  for (let i = 0; i < n; i++) {
    const c = BASE + BigInt(i) * PAGE;
    t.insert(c, c + PAGE - 1n, i);
  }
  return t;
}

function perOp(ops: number, fn: (i: number) => void): number {
  for (let i = 0; i < Math.min(ops, 20_000); i++) fn(i); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ops; i++) fn(i);
  return Number(process.hrtime.bigint() - t0) / ops;
}

console.log(`maple, the DeviceFile pattern (ascending cookies) — node ${process.version}`);
console.log("| live mappings | alloc + insert + erase ns | load hit ns (baseline) | ratio |");
console.log("|---|---|---|---|");
const cycle: number[] = [];
for (const n of [1_000, 10_000, 100_000, 1_000_000]) {
  const t = build(n);
  const c = perOp(200_000, () => {
    const k = t.allocRange(PAGE, { align: PAGE, min: BASE });
    t.insert(k, k + PAGE - 1n, -1);
    t.erase(k);
  });
  const hit = perOp(200_000, (i) => void t.load(BASE + BigInt((i * 7919) % n) * PAGE));
  cycle.push(c);
  console.log(`| ${n} | ${c.toFixed(0)} | ${hit.toFixed(0)} | ${(c / hit).toFixed(2)}x |`);
}
const growth = cycle[3]! / cycle[0]!;
console.log(
  `goal 6 (store growth, DeviceFile pattern): ${growth.toFixed(2)}x from 1e3 to 1e6 live mappings (goal < 3x: ${growth < 3 ? "met" : "missed"})`,
);
