// maple/alloc.ts — owns free-range search (the kernel's mas_empty_area / mas_empty_area_rev under
// MT_FLAGS_ALLOC_RANGE): the lowest or highest aligned start of a free run of `size` indices inside
// [min, max]. It descends only into children whose tracked gap is large enough and whose span meets the
// window, so a search is O(log n) unless alignment or the window edge forces it to try another subtree.
// Never changes the tree: callers insert the range themselves (or use MapleTree.allocate).

import { NoSpaceError } from "./errors.js";
import { checkIndex, isPowerOfTwo, join, lt, MAX_INDEX, out, show, split, TWO32 } from "./key.js";
import { BRANCH_STRIDE, LEAF_STRIDE, type MapleNode, summarize, type TreeState } from "./node.js";

export interface AllocOptions {
  /** Start must be a multiple of this power of two (1 .. 2^63). Default 1. */
  align?: bigint;
  /** Lowest index the allocated range may use. Default 0. */
  min?: bigint;
  /** Highest index the allocated range may use. Default 2^64-1. */
  max?: bigint;
}

/** A checked request, with the bounds also as (hi, lo) pairs for the fast pruning tests. */
interface Request {
  size: bigint;
  align: bigint;
  min: bigint;
  max: bigint;
  szH: number;
  szL: number;
  minH: number;
  minL: number;
  maxH: number;
  maxL: number;
}

const scratch = new Uint32Array(BRANCH_STRIDE);

/** Lowest (or, with reverse, highest) aligned start of a free [start, start+size-1] inside [min, max]. */
export function findFree(
  s: TreeState,
  size: bigint,
  opts: AllocOptions | undefined,
  reverse: boolean,
): bigint {
  const r = request(size, opts);
  let found: bigint | undefined;
  if (size - 1n <= r.max - r.min) {
    const root = s.root;
    if (root === null) {
      found = reverse ? fitHigh(0n, MAX_INDEX, r) : fitLow(0n, MAX_INDEX, r);
    } else {
      summarize(root, scratch, 0);
      const first = join(scratch[0]!, scratch[1]!);
      const last = join(scratch[2]!, scratch[3]!);
      const bigGap = !lt(scratch[4]!, scratch[5]!, r.szH, r.szL);
      if (reverse) {
        if (last < MAX_INDEX) found = fitHigh(last + 1n, MAX_INDEX, r);
        if (found === undefined && bigGap) found = highIn(root, r);
        if (found === undefined && first > 0n) found = fitHigh(0n, first - 1n, r);
      } else {
        if (first > 0n) found = fitLow(0n, first - 1n, r);
        if (found === undefined && bigGap) found = lowIn(root, r);
        if (found === undefined && last < MAX_INDEX) found = fitLow(last + 1n, MAX_INDEX, r);
      }
    }
  }
  if (found === undefined) throw new NoSpaceError(size, r.align, r.min, r.max);
  return found;
}

function request(size: bigint, opts: AllocOptions | undefined): Request {
  if (typeof size !== "bigint") {
    throw new TypeError(`size must be a bigint, got ${typeof size}; pass BigInt(${String(size)})`);
  }
  if (size < 1n || size > MAX_INDEX + 1n) {
    throw new RangeError(
      `size ${size} is outside 1 .. 2^64; ask for at least one index and at most the whole space`,
    );
  }
  const align = opts?.align ?? 1n;
  const min = opts?.min ?? 0n;
  const max = opts?.max ?? MAX_INDEX;
  if (typeof align !== "bigint" || !isPowerOfTwo(align) || align > 1n << 63n) {
    throw new RangeError(
      `align ${String(align)} is not a power of two in 1 .. 2^63; round it to a power of two such as ${suggestAlign(align)}`,
    );
  }
  checkIndex(min, "min");
  checkIndex(max, "max");
  if (min > max) throw new RangeError(`min ${show(min)} is greater than max ${show(max)}; pass min <= max`);
  split(size);
  const szH = out.h;
  const szL = out.l;
  split(min);
  const minH = out.h;
  const minL = out.l;
  split(max);
  return { size, align, min, max, szH, szL, minH, minL, maxH: out.h, maxL: out.l };
}

function suggestAlign(a: unknown): string {
  if (typeof a !== "bigint" || a <= 0n) return "1";
  if (a > 1n << 63n) return `${1n << 63n}`;
  let p = 1n;
  while (p < a) p <<= 1n;
  return `${p}`;
}

/** Lowest fit inside the free run [a, b]. */
function fitLow(a: bigint, b: bigint, r: Request): bigint | undefined {
  const lo = a > r.min ? a : r.min;
  const hi = b < r.max ? b : r.max;
  if (lo > hi) return undefined;
  const start = (lo + r.align - 1n) & ~(r.align - 1n);
  if (start > hi || hi - start < r.size - 1n) return undefined;
  return start;
}

/** Highest fit inside the free run [a, b]. */
function fitHigh(a: bigint, b: bigint, r: Request): bigint | undefined {
  const lo = a > r.min ? a : r.min;
  const hi = b < r.max ? b : r.max;
  if (lo > hi || hi - lo < r.size - 1n) return undefined;
  const start = (hi - r.size + 1n) & ~(r.align - 1n);
  return start < lo ? undefined : start;
}

/** Does the free run strictly between index p and index q (q > p) hold at least `size` indices? */
function runFits(pH: number, pL: number, qH: number, qL: number, r: Request): boolean {
  let dl = qL - pL - 1;
  let dh = qH - pH;
  if (dl < 0) {
    dl += TWO32;
    dh -= 1;
  }
  return dh > r.szH || (dh === r.szH && dl >= r.szL);
}

/** Lowest fit in the runs strictly inside `node`'s span [first, last]. */
function lowIn(node: MapleNode, r: Request): bigint | undefined {
  const k = node.keys;
  const n = node.n;
  if (node.leaf) {
    for (let j = LEAF_STRIDE, e = n * LEAF_STRIDE; j < e; j += LEAF_STRIDE) {
      const pH = k[j - 2]!;
      const pL = k[j - 1]!;
      if (!lt(pH, pL, r.maxH, r.maxL)) return undefined; // run starts above max: so does every later one
      const qH = k[j]!;
      const qL = k[j + 1]!;
      if (!lt(r.minH, r.minL, qH, qL)) continue; // run ends below min
      if (runFits(pH, pL, qH, qL, r)) {
        const found = fitLow(join(pH, pL) + 1n, join(qH, qL) - 1n, r);
        if (found !== undefined) return found;
      }
    }
    return undefined;
  }
  for (let i = 0, e = n * BRANCH_STRIDE; i < e; i += BRANCH_STRIDE) {
    const fH = k[i]!;
    const fL = k[i + 1]!;
    if (i > 0) {
      const pH = k[i - 4]!;
      const pL = k[i - 3]!;
      if (!lt(pH, pL, r.maxH, r.maxL)) return undefined;
      if (lt(r.minH, r.minL, fH, fL) && runFits(pH, pL, fH, fL, r)) {
        const found = fitLow(join(pH, pL) + 1n, join(fH, fL) - 1n, r);
        if (found !== undefined) return found;
      }
    }
    if (!lt(fH, fL, r.maxH, r.maxL)) return undefined;
    const gH = k[i + 4]!;
    if (
      (gH > r.szH || (gH === r.szH && k[i + 5]! >= r.szL)) &&
      lt(r.minH, r.minL, k[i + 2]!, k[i + 3]!) // child's runs end before its pivot; it must exceed min
    ) {
      const found = lowIn(node.slots[i / BRANCH_STRIDE] as MapleNode, r);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** Highest fit in the runs strictly inside `node`'s span [first, last]. */
function highIn(node: MapleNode, r: Request): bigint | undefined {
  const k = node.keys;
  const n = node.n;
  if (node.leaf) {
    for (let j = (n - 1) * LEAF_STRIDE; j > 0; j -= LEAF_STRIDE) {
      const qH = k[j]!;
      const qL = k[j + 1]!;
      if (!lt(r.minH, r.minL, qH, qL)) return undefined; // run ends below min: so does every earlier one
      const pH = k[j - 2]!;
      const pL = k[j - 1]!;
      if (!lt(pH, pL, r.maxH, r.maxL)) continue; // run starts above max
      if (runFits(pH, pL, qH, qL, r)) {
        const found = fitHigh(join(pH, pL) + 1n, join(qH, qL) - 1n, r);
        if (found !== undefined) return found;
      }
    }
    return undefined;
  }
  for (let i = (n - 1) * BRANCH_STRIDE; i >= 0; i -= BRANCH_STRIDE) {
    const lH = k[i + 2]!;
    const lL = k[i + 3]!;
    if (!lt(r.minH, r.minL, lH, lL)) return undefined;
    const fH = k[i]!;
    const fL = k[i + 1]!;
    const gH = k[i + 4]!;
    if ((gH > r.szH || (gH === r.szH && k[i + 5]! >= r.szL)) && lt(fH, fL, r.maxH, r.maxL)) {
      const found = highIn(node.slots[i / BRANCH_STRIDE] as MapleNode, r);
      if (found !== undefined) return found;
    }
    if (i > 0) {
      const pH = k[i - 4]!;
      const pL = k[i - 3]!;
      if (!lt(r.minH, r.minL, fH, fL)) return undefined;
      if (lt(pH, pL, r.maxH, r.maxL) && runFits(pH, pL, fH, fL, r)) {
        const found = fitHigh(join(pH, pL) + 1n, join(fH, fL) - 1n, r);
        if (found !== undefined) return found;
      }
    }
  }
  return undefined;
}
