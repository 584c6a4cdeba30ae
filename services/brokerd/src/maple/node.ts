// maple/node.ts — owns the node layout and the per-node arithmetic: range nodes (leaves) and
// allocation nodes (branches), their fill limits, in-node search, and the child summary
// (first index, pivot, largest gap) that a branch keeps for each child.
// Never converts to bigint and never allocates on the lookup path.
//
// Layout (all 64-bit values as two uint32 words, hi first):
//   range node  (leaf):   keys = [startH, startL, lastH, lastL] per slot,  slots = entries
//   alloc node  (branch): keys = [firstH, firstL, pivotH, pivotL, gapH, gapL] per child, slots = children
// A branch's pivot for child i is the `last` of the last entry below child i (as in the kernel, where
// pivot[i] is the maximum index of slot i). `gap` is the largest run of free indices strictly between
// two entries below child i. The free run *between* child i-1 and child i is not stored: it is
// first[i] - pivot[i-1] - 1, computed on the fly. This keeps every summary a pure function of the child,
// so a change only ever touches the path from the changed leaf to the root.
// Unlike the kernel, empty ranges are not stored as NULL slots: a range node holds only entries, and
// gaps are implied between them (half the slots per entry when the space is fragmented).

import { TWO32 } from "./key.js";

export const LEAF_STRIDE = 4;
export const BRANCH_STRIDE = 6;

export class MapleNode {
  /** Number of used slots. */
  n = 0;
  readonly leaf: boolean;
  /** See the layout above; sized for capacity + 1 so a node can overflow by one before it splits. */
  readonly keys: Uint32Array;
  /** Entries (leaf) or child MapleNodes (branch); unused slots are undefined. */
  readonly slots: unknown[];

  constructor(leaf: boolean, capacity: number) {
    this.leaf = leaf;
    this.keys = new Uint32Array((capacity + 1) * (leaf ? LEAF_STRIDE : BRANCH_STRIDE));
    this.slots = new Array(capacity + 1);
  }
}

/** Everything a MapleTree is, as plain data shared by the operation files. */
export interface TreeState {
  root: MapleNode | null;
  /** Levels: 0 when empty, 1 when the root is a leaf. */
  height: number;
  count: number;
  /** Bumped on every mutation; iterators use it to detect concurrent modification. */
  version: number;
  readonly leafCap: number;
  readonly branchCap: number;
  readonly leafMin: number;
  readonly branchMin: number;
}

/** Fill limits follow the kernel's mt_min_slots: range nodes may drop to slots/2 - 2, alloc nodes to slots/2 - 1. */
export function newState(leafCap: number, branchCap: number): TreeState {
  return {
    root: null,
    height: 0,
    count: 0,
    version: 0,
    leafCap,
    branchCap,
    leafMin: Math.max(2, (leafCap >> 1) - 2),
    branchMin: Math.max(2, (branchCap >> 1) - 1),
  };
}

/**
 * First slot whose `last` (leaf) or pivot (branch) is >= (h, l); n if none. Both node kinds keep
 * that key at words 2..3 of each `stride`-word record, so one binary search serves both.
 */
function lowerBound(node: MapleNode, stride: number, h: number, l: number): number {
  const k = node.keys;
  let lo = 0;
  let hi = node.n;
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    const b = m * stride;
    const ph = k[b + 2]!;
    if (ph < h || (ph === h && k[b + 3]! < l)) lo = m + 1;
    else hi = m;
  }
  return lo;
}

/** First slot of a leaf whose `last` >= (h, l); n if none. */
export const leafLowerBound = (node: MapleNode, h: number, l: number): number =>
  lowerBound(node, LEAF_STRIDE, h, l);

/** First child of a branch whose pivot >= (h, l); n if none. */
export const branchLowerBound = (node: MapleNode, h: number, l: number): number =>
  lowerBound(node, BRANCH_STRIDE, h, l);

/**
 * Write the summary of `c` (first index, last index, largest inner gap) into dst at word `b`.
 * Returns true if it differs from what was there.
 */
export function summarize(c: MapleNode, dst: Uint32Array, b: number): boolean {
  const k = c.keys;
  const n = c.n;
  let gH = 0;
  let gL = 0;
  let e: number;
  if (c.leaf) {
    e = (n - 1) * LEAF_STRIDE;
    for (let j = LEAF_STRIDE; j <= e; j += LEAF_STRIDE) {
      // free run between entry j-1's last and entry j's start
      let dl = k[j + 1]! - k[j - 1]! - 1;
      let dh = k[j]! - k[j - 2]!;
      if (dl < 0) {
        dl += TWO32;
        dh -= 1;
      }
      if (dh > gH || (dh === gH && dl > gL)) {
        gH = dh;
        gL = dl;
      }
    }
  } else {
    e = (n - 1) * BRANCH_STRIDE;
    for (let j = 0; j <= e; j += BRANCH_STRIDE) {
      const ih = k[j + 4]!;
      const il = k[j + 5]!;
      if (ih > gH || (ih === gH && il > gL)) {
        gH = ih;
        gL = il;
      }
      if (j > 0) {
        let dl = k[j + 1]! - k[j - 3]! - 1;
        let dh = k[j]! - k[j - 4]!;
        if (dl < 0) {
          dl += TWO32;
          dh -= 1;
        }
        if (dh > gH || (dh === gH && dl > gL)) {
          gH = dh;
          gL = dl;
        }
      }
    }
  }
  const fH = k[0]!;
  const fL = k[1]!;
  const lH = k[e + 2]!;
  const lL = k[e + 3]!;
  if (
    dst[b] === fH &&
    dst[b + 1] === fL &&
    dst[b + 2] === lH &&
    dst[b + 3] === lL &&
    dst[b + 4] === gH &&
    dst[b + 5] === gL
  ) {
    return false;
  }
  dst[b] = fH;
  dst[b + 1] = fL;
  dst[b + 2] = lH;
  dst[b + 3] = lL;
  dst[b + 4] = gH;
  dst[b + 5] = gL;
  return true;
}

/** Open a hole of one slot at `at` (shifting [at, n) right). Does not change n. */
export function openSlot(node: MapleNode, at: number): void {
  const st = node.leaf ? LEAF_STRIDE : BRANCH_STRIDE;
  const k = node.keys;
  const s = node.slots;
  for (let x = node.n * st - 1, stop = at * st; x >= stop; x--) k[x + st] = k[x]!;
  for (let x = node.n - 1; x >= at; x--) s[x + 1] = s[x];
}

/** Remove slot `at` (shifting (at, n) left) and decrement n. */
export function closeSlot(node: MapleNode, at: number): void {
  const st = node.leaf ? LEAF_STRIDE : BRANCH_STRIDE;
  const k = node.keys;
  const s = node.slots;
  const n = node.n;
  for (let x = (at + 1) * st, stop = n * st; x < stop; x++) k[x - st] = k[x]!;
  for (let x = at + 1; x < n; x++) s[x - 1] = s[x];
  s[n - 1] = undefined;
  node.n = n - 1;
}

/** Append slots [from, from + count) of `src` to the end of `dst`. Does not touch src. */
export function appendSlots(dst: MapleNode, src: MapleNode, from: number, count: number): void {
  const st = dst.leaf ? LEAF_STRIDE : BRANCH_STRIDE;
  const dk = dst.keys;
  const sk = src.keys;
  for (let x = 0, d = dst.n * st, s = from * st, stop = count * st; x < stop; x++) dk[d + x] = sk[s + x]!;
  for (let x = 0; x < count; x++) dst.slots[dst.n + x] = src.slots[from + x];
  dst.n += count;
}

/** Drop the first `count` slots of `node`, shifting the rest to the front. */
export function dropHead(node: MapleNode, count: number): void {
  const st = node.leaf ? LEAF_STRIDE : BRANCH_STRIDE;
  const k = node.keys;
  const s = node.slots;
  const n = node.n;
  for (let x = count * st, stop = n * st; x < stop; x++) k[x - count * st] = k[x]!;
  for (let x = count; x < n; x++) s[x - count] = s[x];
  for (let x = n - count; x < n; x++) s[x] = undefined;
  node.n = n - count;
}

/** Keep only the first `count` slots of `node`. */
export function truncate(node: MapleNode, count: number): void {
  for (let x = count; x < node.n; x++) node.slots[x] = undefined;
  node.n = count;
}

/** Prepend slots [from, from + count) of `src` in front of `dst`'s slots. */
export function prependSlots(dst: MapleNode, src: MapleNode, from: number, count: number): void {
  const st = dst.leaf ? LEAF_STRIDE : BRANCH_STRIDE;
  const dk = dst.keys;
  const sk = src.keys;
  const ds = dst.slots;
  for (let x = dst.n * st - 1; x >= 0; x--) dk[x + count * st] = dk[x]!;
  for (let x = dst.n - 1; x >= 0; x--) ds[x + count] = ds[x];
  for (let x = 0, s = from * st, stop = count * st; x < stop; x++) dk[x] = sk[s + x]!;
  for (let x = 0; x < count; x++) ds[x] = src.slots[from + x];
  dst.n += count;
}
