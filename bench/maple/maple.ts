// bench/maple/maple.ts — MapleTree against the sorted-array ReferenceMaple, same operations, same run.
// Reports ns/op for load (hits and misses), store, erase, allocRange, and bytes per entry, at 1e3..1e6
// entries, then a fan-out sweep at 1e6 that justifies the default node sizes (32/32) in maple/tree.ts.
// Run: npx tsc -b bench && node --expose-gc bench/dist/maple/maple.js   (never touches the filesystem)
//
// Layout of the data: entry i is [16i, 16i+7] (8 used, 8 free); every 64th entry is left out, so one
// free run in 64 is 24 long. Entries are small integers (no heap of their own), inserted in shuffled order.
// Bytes per entry = (heapUsed + external + arrayBuffers) after building, minus before, over n, after a
// full GC. Overhead = that minus 24 bytes: the payload any representation needs (start and last as 64-bit
// words, plus one 8-byte reference to the entry).

import { MapleTree, type MapleTreeOptions } from "@vfio-broker/brokerd/maple/index";
import { ReferenceMaple } from "@vfio-broker/brokerd/maple/reference";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error("run with node --expose-gc so bytes/entry can be measured");
  process.exit(2);
}

const PAYLOAD = 24;
let seed = 12345;
function rand(n: number): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return ((seed >>> 8) * n) / (1 << 24);
}
const randInt = (n: number) => Math.floor(rand(n));

function memNow(): number {
  gc!();
  gc!();
  const m = process.memoryUsage();
  return m.heapUsed + m.external + m.arrayBuffers;
}

function keep(i: number): boolean {
  return i % 64 !== 63;
}

function build(
  n: number,
  options: MapleTreeOptions,
): { tree: MapleTree<number>; bytes: number; buildNs: number } {
  const ids: number[] = [];
  for (let i = 0; ids.length < n; i++) if (keep(i)) ids.push(i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = randInt(i + 1);
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  const before = memNow();
  const t0 = process.hrtime.bigint();
  const tree = new MapleTree<number>(options);
  for (const i of ids) tree.insert(BigInt(i * 16), BigInt(i * 16 + 7), i);
  const buildNs = Number(process.hrtime.bigint() - t0) / n;
  ids.length = 0;
  const bytes = (memNow() - before) / n;
  return { tree, bytes, buildNs };
}

function buildReference(tree: MapleTree<number>): { ref: ReferenceMaple<number>; bytes: number } {
  const before = memNow();
  const ref = ReferenceMaple.fromSorted(tree);
  return { ref, bytes: (memNow() - before) / tree.size };
}

/** Time `op` over the inputs, repeating up to `rounds` times, stopping early after `budgetMs`. */
function time(inputs: readonly bigint[], op: (k: bigint) => unknown, budgetMs: number, minOps = 0): number {
  const rounds = Math.max(1, Math.ceil(minOps / inputs.length));
  let ops = 0;
  let sink = 0;
  const t0 = process.hrtime.bigint();
  const budget = BigInt(budgetMs) * 1_000_000n;
  outer: for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < inputs.length; i++) {
      if (op(inputs[i]!) !== undefined) sink++;
      ops++;
      if ((ops & 63) === 0 && process.hrtime.bigint() - t0 > budget) break outer;
    }
  }
  const ns = Number(process.hrtime.bigint() - t0) / ops;
  if (sink < 0) console.log(sink);
  return ns;
}

/**
 * Rounds of: store [k, k+3] for each free key, then erase them all. Returns [store ns/op, erase ns/op].
 * Stops after budgetMs (checked between batches of 64, so a slow sorted array still reports) or minOps.
 */
function storeErase(
  t: { store(s: bigint, l: bigint, e: number): void; erase(k: bigint): unknown },
  keys: readonly bigint[],
  budgetMs: number,
  minOps: number,
): [number, number] {
  let storeNs = 0;
  let eraseNs = 0;
  let ops = 0;
  const budget = budgetMs * 1e6;
  do {
    let i = 0;
    while (i < keys.length && storeNs + eraseNs < budget) {
      const end = Math.min(keys.length, i + 64);
      const t0 = process.hrtime.bigint();
      for (let j = i; j < end; j++) t.store(keys[j]!, keys[j]! + 3n, -1);
      const t1 = process.hrtime.bigint();
      for (let j = i; j < end; j++) t.erase(keys[j]!);
      const t2 = process.hrtime.bigint();
      storeNs += Number(t1 - t0);
      eraseNs += Number(t2 - t1);
      ops += end - i;
      i = end;
    }
  } while (ops < minOps && storeNs + eraseNs < budget);
  return [storeNs / ops, eraseNs / ops];
}

interface Row {
  n: number;
  op: string;
  tree: number;
  ref: number;
}

/** Keys for an instance with `count` entries laid out as above: `lastId` is the largest entry id. */
function queries(lastId: number, count: number) {
  const hits: bigint[] = [];
  const misses: bigint[] = [];
  const free: bigint[] = [];
  const windows: bigint[] = [];
  for (let q = 0; q < count; q++) {
    let i = randInt(lastId + 1);
    while (!keep(i)) i = randInt(lastId + 1);
    hits.push(BigInt(i * 16 + randInt(8)));
    misses.push(BigInt(i * 16 + 8 + randInt(8)));
    windows.push(BigInt(randInt(lastId + 1) * 16));
  }
  // distinct free slots for store/erase: [16i+9, 16i+12] inside entry i's trailing free run
  const seen = new Set<number>();
  while (free.length < Math.min(count, (lastId + 1) >> 1)) {
    const i = randInt(lastId + 1);
    if (!keep(i) || seen.has(i)) continue;
    seen.add(i);
    free.push(BigInt(i * 16 + 9));
  }
  return { hits, misses, free, windows };
}

function measure(n: number, options: MapleTreeOptions, withReference: boolean, opCount: number) {
  const { tree, bytes, buildNs } = build(n, options);
  const rows: Row[] = [];
  let refBytes = Number.NaN;
  let ref: ReferenceMaple<number> | undefined;
  if (withReference) ({ ref, bytes: refBytes } = buildReference(tree));
  const lastId = Number(tree.prev(1n << 63n)!.entry);
  const q = queries(lastId, opCount);
  const cmp = (op: string, t: number, r: number) => rows.push({ n, op, tree: t, ref: r });
  const noRef = Number.NaN;

  // warm both paths first so the JIT has compiled them
  time(q.hits, (k) => tree.load(k), 30);
  if (ref) time(q.hits, (k) => ref.load(k), 30);

  cmp(
    "load hit",
    time(q.hits, (k) => tree.load(k), 400, 300_000),
    ref ? time(q.hits, (k) => ref.load(k), 400, 300_000) : noRef,
  );
  cmp(
    "load miss",
    time(q.misses, (k) => tree.load(k), 400, 300_000),
    ref ? time(q.misses, (k) => ref.load(k), 400, 300_000) : noRef,
  );

  // store a 4-index range into a free run, then erase it again: size stays n
  const [tStore, tErase] = storeErase(tree, q.free, 1200, 200_000);
  if (tree.size !== n) throw new Error(`tree size ${tree.size} after store/erase, expected ${n}`);
  const [rStore, rErase] = ref ? storeErase(ref, q.free, 400, 0) : [noRef, noRef];
  if (ref && ref.size !== n) throw new Error(`reference size ${ref.size} after store/erase, expected ${n}`);
  cmp("store", tStore, rStore);
  cmp("erase", tErase, rErase);

  // lowest free run of 12 at or above a random index: only one run in 64 is long enough,
  // so the search must skip subtrees by their gap summaries
  const alloc = (t: { allocRange(s: bigint, o: { min: bigint }): bigint }) => (k: bigint) =>
    t.allocRange(12n, { min: k });
  cmp(
    "allocRange",
    time(q.windows, alloc(tree), 400, 300_000),
    ref ? time(q.windows, alloc(ref), 400, 300_000) : noRef,
  );
  return { rows, bytes, refBytes, buildNs, depth: tree.depth };
}

const fmt = (x: number) => (Number.isNaN(x) ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const pad = (s: string, w: number) => s.padStart(w);

function main() {
  const started = Date.now();
  console.log(`maple tree benchmark — node ${process.version}, ${process.arch}`);
  console.log("ns/op; ratio = sorted array / maple tree (>1: tree faster)\n");
  console.log(
    `${pad("entries", 8)} ${pad("op", 11)} ${pad("maple ns", 10)} ${pad("sorted ns", 10)} ${pad("ratio", 7)}`,
  );
  const sweepOnly = process.argv.includes("--sweep-only");
  measure(1e4, {}, true, 10_000); // warm the JIT so the 1e3 row measures optimised code
  const perSize: Record<string, Record<number, { tree: number; ref: number }>> = {};
  const mem: string[] = [];
  for (const n of sweepOnly ? [] : [1e3, 1e4, 1e5, 1e6]) {
    const r = measure(n, {}, true, Math.min(100_000, n));
    for (const row of r.rows) {
      console.log(
        `${pad(String(n), 8)} ${pad(row.op, 11)} ${pad(fmt(row.tree), 10)} ${pad(fmt(row.ref), 10)} ${pad(fmt(row.ref / row.tree), 7)}`,
      );
      perSize[row.op] ??= {};
      perSize[row.op]![n] = { tree: row.tree, ref: row.ref };
    }
    mem.push(
      `${pad(String(n), 8)} ${pad(String(r.depth), 6)} ${pad(fmt(r.bytes), 12)} ${pad(fmt(r.bytes - PAYLOAD), 15)} ${pad(fmt(r.refBytes), 13)} ${pad(fmt(r.buildNs), 14)}`,
    );
  }
  console.log(
    `\n${pad("entries", 8)} ${pad("depth", 6)} ${pad("maple B/ent", 12)} ${pad("maple overhead", 15)} ${pad("sorted B/ent", 13)} ${pad("insert ns/op", 14)}`,
  );
  for (const m of mem) console.log(m);

  console.log("\ngrowth of per-op time from 1e3 to 1e6 entries (target for the tree: < 3x)");
  for (const [op, by] of Object.entries(perSize)) {
    const a = by[1e3];
    if (a === undefined) continue;
    const b = by[1e6]!;
    console.log(`  ${op.padEnd(11)} maple ${fmt(b.tree / a.tree)}x   sorted ${fmt(b.ref / a.ref)}x`);
  }

  console.log("\nfan-out sweep at 1e6 entries (leaf slots / branch slots)");
  console.log(
    `${pad("fan-out", 8)} ${pad("depth", 6)} ${pad("load hit", 9)} ${pad("load miss", 10)} ${pad("store", 7)} ${pad("erase", 7)} ${pad("alloc", 7)} ${pad("B/ent", 7)}`,
  );
  for (const [leafSlots, branchSlots] of [
    [8, 8],
    [16, 10],
    [16, 16],
    [32, 16],
    [32, 32],
    [64, 32],
    [64, 64],
    [128, 64],
  ] as const) {
    const r = measure(1e6, { leafSlots, branchSlots }, false, 100_000);
    const v = (op: string) => fmt(r.rows.find((x) => x.op === op)!.tree);
    console.log(
      `${pad(`${leafSlots}/${branchSlots}`, 8)} ${pad(String(r.depth), 6)} ${pad(v("load hit"), 9)} ${pad(v("load miss"), 10)} ${pad(v("store"), 7)} ${pad(v("erase"), 7)} ${pad(v("allocRange"), 7)} ${pad(fmt(r.bytes), 7)}`,
    );
  }
  console.log(`\ntotal ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main();
