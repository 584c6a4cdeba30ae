// maple/maple.edge.test.ts — hand-written edge cases: exact-fit allocation, big alignments, windows
// without a fit, erasing from full nodes, shrinking to empty, whole-space stores, three-way splits,
// argument errors, and proof that validate() and allocRange() depend on the tracked gaps.

import assert from "node:assert/strict";
import { test } from "node:test";
import { NoSpaceError, RangeOccupiedError } from "./errors.js";
import { MAX_INDEX } from "./key.js";
import { BRANCH_STRIDE, type MapleNode } from "./node.js";
import { ReferenceMaple } from "./reference.js";
import { DEFAULT_LEAF_SLOTS, INTERNALS, MapleTree } from "./tree.js";

const P40 = 1n << 40n;
const P53 = 1n << 53n;
const P63 = 1n << 63n;

function entries<T>(t: MapleTree<T>): [bigint, bigint, T][] {
  return [...t].map((e) => [e.start, e.last, e.entry]);
}

/** A tree of `n` entries [10i, 10i+4] (gaps of 5 between them), inserted in a shuffled order. */
function spaced(n: number, options = {}): MapleTree<number> {
  const t = new MapleTree<number>(options);
  const order = Array.from({ length: n }, (_, i) => i);
  let seed = 7;
  for (let i = n - 1; i > 0; i--) {
    seed = (seed * 48271) % 2147483647;
    const j = seed % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  for (const i of order) t.insert(BigInt(i) * 10n, BigInt(i) * 10n + 4n, i);
  t.validate();
  return t;
}

test("allocation that exactly fills a gap, then no more room in that window", () => {
  const t = new MapleTree<string>();
  t.insert(0n, 9n, "a");
  t.insert(20n, 29n, "b");
  assert.equal(t.allocRange(10n, { max: 29n }), 10n);
  assert.equal(t.allocate(10n, "gap", { max: 29n }), 10n);
  t.validate();
  assert.deepEqual(entries(t), [
    [0n, 9n, "a"],
    [10n, 19n, "gap"],
    [20n, 29n, "b"],
  ]);
  assert.throws(() => t.allocRange(1n, { max: 29n }), NoSpaceError);
  assert.equal(t.allocRange(1n), 30n);
  assert.equal(t.allocRangeReverse(1n), MAX_INDEX);
});

test("alignment up to 2^40 (and 2^63), both directions", () => {
  const t = new MapleTree<string>();
  t.insert(0n, 5n, "low");
  t.insert(MAX_INDEX - 5n, MAX_INDEX, "high");
  assert.equal(t.allocRange(1n, { align: P40 }), P40);
  assert.equal(t.allocRange(P40, { align: P40 }), P40);
  assert.equal(t.allocRangeReverse(1n, { align: P40 }), MAX_INDEX + 1n - P40);
  assert.equal(t.allocRangeReverse(P40, { align: P40 }), MAX_INDEX + 1n - 2n * P40);
  // [6, 2^63-1] is too short for 2^63 indices, and [2^63, 2^64-1] is cut by the top entry
  assert.throws(() => t.allocRange(P63, { align: P63 }), NoSpaceError);
  t.erase(MAX_INDEX);
  assert.equal(t.allocRange(P63, { align: P63 }), P63);
  t.validate();
});

test("min/max windows with no fit throw NoSpaceError naming size, align and window", () => {
  const t = spaced(200);
  const err = (() => {
    try {
      t.allocRange(6n, { min: 100n, max: 900n, align: 2n });
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(err instanceof NoSpaceError);
  assert.equal(err.size, 6n);
  assert.match(err.message, /size 6 .*aligned to 2 .*inside \[100 \(0x64\), 900 \(0x384\)\]/);
  assert.throws(() => t.allocRangeReverse(6n, { min: 100n, max: 900n }), NoSpaceError);
  assert.throws(() => t.allocRange(20n, { min: 0n, max: 10n }), /no free range of size 20/);
  // a window that fits exactly one aligned slot
  assert.equal(t.allocRange(5n, { min: 1995n, max: 1999n }), 1995n);
  assert.equal(t.allocRange(4n, { min: 1995n, max: 1999n, align: 4n }), 1996n);
  assert.equal(t.allocRangeReverse(4n, { min: 1995n, max: 1999n, align: 4n }), 1996n);
  // after the last entry the space is free up to 2^64-1
  assert.equal(t.allocRange(1000n, { min: 100n }), 1995n);
});

test("erase in the middle of a full node", () => {
  const t = new MapleTree<number>();
  const full = BigInt(DEFAULT_LEAF_SLOTS);
  for (let i = 0n; i < full; i++) t.insert(i * 2n, i * 2n, Number(i));
  assert.equal(t.depth, 1);
  assert.equal(t.erase(full), Number(full / 2n));
  t.validate();
  assert.equal(t.load(full), undefined);
  assert.equal(t.size, DEFAULT_LEAF_SLOTS - 1);
  assert.equal(t.allocRange(2n), full - 1n); // the freed index joins the odd gaps on both sides
  // and in a deep tree: every node along the way is at or near capacity
  const deep = spaced(5000);
  for (let i = 2500; i < 2600; i++) {
    assert.equal(deep.erase(BigInt(i) * 10n + 2n), i);
    deep.validate();
  }
  assert.equal(deep.size, 4900);
});

test("tree shrinks back to empty (depth 0) and grows again", () => {
  const t = spaced(3000, { leafSlots: 4, branchSlots: 4 });
  assert.ok(t.depth >= 5, `depth ${t.depth}`);
  for (let i = 0; i < 3000; i++) {
    const k = BigInt((i * 1237) % 3000) * 10n;
    assert.equal(t.erase(k + 4n), (i * 1237) % 3000);
    if (i % 50 === 0) t.validate();
  }
  t.validate();
  assert.equal(t.depth, 0);
  assert.ok(t.isEmpty);
  assert.deepEqual(t.dump(), { size: 0, depth: 0, root: null });
  t.store(5n, 6n, 1);
  assert.equal(t.depth, 1);
  t.clear();
  assert.equal(t.depth, 0);
});

test("store over the whole 64-bit space replaces everything; partial clears split it", () => {
  const t = spaced(500);
  t.insert(P53, P53 + 1n, -1);
  t.insert(MAX_INDEX, MAX_INDEX, -2);
  t.store(0n, MAX_INDEX, 42);
  t.validate();
  assert.deepEqual(entries(t), [[0n, MAX_INDEX, 42]]);
  assert.equal(t.load(MAX_INDEX), 42);
  assert.equal(t.load(P53 - 1n), 42);
  assert.throws(() => t.allocRange(1n), NoSpaceError);
  t.store(P53, P53, undefined);
  t.validate();
  assert.deepEqual(entries(t), [
    [0n, P53 - 1n, 42],
    [P53 + 1n, MAX_INDEX, 42],
  ]);
  assert.equal(t.allocRange(1n), P53);
  assert.equal(t.erase(MAX_INDEX), 42);
  assert.equal(t.allocRangeReverse(P63), MAX_INDEX - P63 + 1n);
  t.validate();
});

test("store that splits one entry into three, and stores spanning several entries", () => {
  const t = new MapleTree<string>();
  t.store(0n, 100n, "a");
  t.store(40n, 60n, "b");
  t.validate();
  assert.deepEqual(entries(t), [
    [0n, 39n, "a"],
    [40n, 60n, "b"],
    [61n, 100n, "a"],
  ]);
  t.store(30n, 70n, "c");
  assert.deepEqual(entries(t), [
    [0n, 29n, "a"],
    [30n, 70n, "c"],
    [71n, 100n, "a"],
  ]);
  t.store(30n, 70n, "d"); // exact overwrite keeps the node, swaps the value
  assert.equal(t.load(50n), "d");
  t.store(20n, 80n, undefined);
  assert.deepEqual(entries(t), [
    [0n, 19n, "a"],
    [81n, 100n, "a"],
  ]);
  t.validate();
});

test("insert names the occupied range; find/next/prev/entries walk across leaves", () => {
  const t = spaced(1000);
  assert.throws(
    () => t.insert(3n, 12n, 0),
    (e: unknown) =>
      e instanceof RangeOccupiedError &&
      e.occupiedStart === 0n &&
      e.occupiedLast === 4n &&
      /\[0, 4\] is already occupied/.test(e.message),
  );
  assert.deepEqual(t.find(5n, 9n), undefined);
  assert.deepEqual(t.find(5n, 10n), { start: 10n, last: 14n, entry: 1 });
  assert.deepEqual(t.next(12n), { start: 20n, last: 24n, entry: 2 });
  assert.deepEqual(t.next(17n), { start: 20n, last: 24n, entry: 2 });
  assert.deepEqual(t.prev(22n), { start: 10n, last: 14n, entry: 1 });
  assert.deepEqual(t.prev(17n), { start: 10n, last: 14n, entry: 1 });
  assert.equal(t.prev(3n), undefined);
  assert.equal(t.next(9990n), undefined);
  assert.deepEqual(t.prev(MAX_INDEX), { start: 9990n, last: 9994n, entry: 999 });
  // walk every leaf boundary both ways
  for (let i = 1; i < 1000; i++) {
    assert.equal(t.next(BigInt(i - 1) * 10n)?.entry, i);
    assert.equal(t.prev(BigInt(i) * 10n)?.entry, i - 1);
  }
  assert.deepEqual(
    [...t.entries(4n, 31n)].map((e) => e.entry),
    [0, 1, 2, 3],
  );
  assert.equal([...t].length, 1000);
  assert.throws(() => {
    for (const e of t.entries()) t.erase(e.start);
  }, /changed during iteration/);
});

test("arguments out of range throw RangeErrors that say what to change", () => {
  const t = new MapleTree<number>();
  assert.throws(() => t.load(-1n), { name: "RangeError", message: /index -1 is negative.*0 \.\. 2\^64-1/ });
  assert.throws(() => t.store(0n, MAX_INDEX + 1n, 1), /last 18446744073709551616 is above 2\^64-1/);
  assert.throws(() => t.insert(5n, 4n, 1), /start 5 is greater than last 4.*pass start <= last/);
  assert.throws(() => t.find(9n, 1n), RangeError);
  assert.throws(() => t.load(5 as unknown as bigint), { name: "TypeError", message: /pass BigInt\(5\)/ });
  assert.throws(() => t.allocRange(8n, { align: 3n }), /align 3 is not a power of two.*such as 4/);
  assert.throws(() => t.allocRange(8n, { align: 1n << 64n }), /align .* not a power of two in 1 \.\. 2\^63/);
  assert.throws(() => t.allocRange(0n), /size 0 is outside 1 \.\. 2\^64/);
  assert.throws(() => t.allocRange(1n, { min: 5n, max: 4n }), /min 5 is greater than max 4/);
  assert.throws(() => new MapleTree({ leafSlots: 2 }), /leafSlots 2 is outside 4 \.\. 256/);
  assert.equal(t.allocRange(1n << 64n), 0n);
  assert.equal(t.allocRange(P63, { align: P63 }), 0n);
  assert.equal(t.allocRangeReverse(P63, { align: P63 }), P63);
});

test("dump renders the node structure as JSON with decimal-string indices", () => {
  const t = spaced(40);
  const d = t.dump();
  assert.equal(d.size, 40);
  assert.equal(d.depth, 2);
  assert.equal(d.root?.kind, "alloc");
  const json = JSON.parse(JSON.stringify(d));
  assert.deepEqual(json, d);
  if (d.root?.kind !== "alloc") throw new Error("unreachable");
  assert.equal(d.root.firsts[0], "0");
  assert.equal(d.root.pivots.at(-1), "394");
  const leaf = d.root.children[0];
  assert.equal(leaf?.kind, "range");
  if (leaf?.kind === "range") assert.deepEqual(leaf.entries[0], { start: "0", last: "4", entry: 0 });
});

test("gap tracking matters: validate() catches a corrupted gap, and allocRange relies on it", () => {
  const t = spaced(3000);
  // free the run [1000, 1999] deep inside the tree
  for (let k = 1000n; k < 2000n; k += 10n) t.erase(k);
  t.validate();
  const model = new ReferenceMaple<number>();
  for (const e of t) model.insert(e.start, e.last, e.entry);
  assert.equal(t.allocRange(900n), model.allocRange(900n));
  assert.equal(t.allocRange(900n), 995n);

  // find the alloc-node slot whose summary holds the big run, and pretend the child has none
  const holder = (node: MapleNode): [MapleNode, number] | undefined => {
    if (node.leaf) return undefined;
    for (let i = 0; i < node.n; i++) {
      const deeper = holder(node.slots[i] as MapleNode);
      if (deeper) return deeper;
      if (node.keys[i * BRANCH_STRIDE + 5]! > 1000) return [node, i];
    }
    return undefined;
  };
  const found = holder(t[INTERNALS]().root as MapleNode);
  assert.ok(found, "the run lies inside some child of an alloc node");
  const [node, corrupted] = found;
  node.keys[corrupted * BRANCH_STRIDE + 5] = 5;
  assert.throws(
    () => t.validate(),
    new RegExp(`gap\\[${corrupted}\\] is 5, largest free run inside the child is 1005`),
  );
  // the search trusts the summary and skips the subtree: it no longer finds the lowest fit
  assert.notEqual(t.allocRange(900n), model.allocRange(900n));
});
