// maple/tree.ts — owns the public MapleTree<T>: a B-tree of non-overlapping inclusive [start, last]
// ranges over the unsigned 64-bit index space, modelled on the kernel's maple tree (lib/maple_tree.c)
// with MT_FLAGS_ALLOC_RANGE: range nodes as leaves, alloc nodes that track the largest free run below
// each child, O(log n) load/store/erase/find/next/prev and gap search.
// It validates arguments and decides what a store overwrites; node layout lives in node.ts, reshaping in
// mutate.ts, gap search in alloc.ts, invariants in validate.ts. Never does I/O; holds no timers.
//
// Fan-out: 32 entries per range node, 32 children per alloc node (the kernel: 16 and 10). Measured with
// bench/maple/maple.ts at 1e6 entries (fan-out sweep; ns/op, bytes/entry; 2 cores, Node 20, noisy box):
//   leaf/branch  depth  load   store  erase  alloc  B/entry
//     8/8          8    1334   1867    388   1962   137
//    16/10         7    1045   1602    432   1783    89
//    16/16         6    1093   1723    441   1766    87
//    32/32         5     638   1278    416   1205    66
//    64/64         4     488   1522    507   1434    56
//   128/64         4     394   1634    696   1475    52
// A lookup is bound by cache misses, and each level costs ~4 of them whatever its width (node object,
// typed-array header, off-heap key words, slots array), so fewer, wider levels load faster; each node also
// carries ~300 bytes of fixed JS overhead, so wide nodes are cheaper per entry. Past 32, store/erase/alloc
// get slower again (every change shifts and re-summarises the whole node) while loads gain <25%; 32/32 is
// the best of all five operations together and keeps the overhead under the 64-byte budget. The kernel's
// 16/10 come from 256-byte cache-line-aligned nodes, a constraint JS objects do not have.

import { type AllocOptions, findFree } from "./alloc.js";
import { RangeOccupiedError } from "./errors.js";
import { checkIndex, checkRange, checkSplit, join, MAX_INDEX, out, split } from "./key.js";
import { insertAt, removeAt } from "./mutate.js";
import {
  branchLowerBound,
  LEAF_STRIDE,
  leafLowerBound,
  type MapleNode,
  newState,
  type TreeState,
} from "./node.js";
import { Path } from "./path.js";
import { type Dump, dump, validate } from "./validate.js";

export interface MapleEntry<T> {
  start: bigint;
  last: bigint;
  entry: T;
}

export interface MapleTreeOptions {
  /** Entries per range node (leaf). Default 32, allowed 4 .. 256. */
  leafSlots?: number;
  /** Children per alloc node (branch). Default 32, allowed 4 .. 256. */
  branchSlots?: number;
}

export const DEFAULT_LEAF_SLOTS = 32;
export const DEFAULT_BRANCH_SLOTS = 32;

/** Test hook: tree[INTERNALS]() returns the live TreeState. Not re-exported from index.ts. */
export const INTERNALS: unique symbol = Symbol("maple.internals");

export class MapleTree<T> {
  readonly #s: TreeState;
  /** Reused by every single-shot operation; iterators make their own. */
  readonly #path = new Path();

  constructor(options: MapleTreeOptions = {}) {
    const leaf = options.leafSlots ?? DEFAULT_LEAF_SLOTS;
    const branch = options.branchSlots ?? DEFAULT_BRANCH_SLOTS;
    for (const [name, v] of [
      ["leafSlots", leaf],
      ["branchSlots", branch],
    ] as const) {
      if (!Number.isInteger(v) || v < 4 || v > 256) {
        throw new RangeError(`${name} ${v} is outside 4 .. 256; the kernel uses 16 (range) and 10 (alloc)`);
      }
    }
    this.#s = newState(leaf, branch);
  }

  /** Number of entries (ranges), not indices. */
  get size(): number {
    return this.#s.count;
  }

  get isEmpty(): boolean {
    return this.#s.count === 0;
  }

  /** Levels of nodes: 0 when empty, 1 when the root is a single range node. */
  get depth(): number {
    return this.#s.height;
  }

  /** The entry whose range contains `index`, or undefined. */
  load(index: bigint): T | undefined {
    checkSplit(index, "index");
    const h = out.h;
    const l = out.l;
    let node = this.#s.root;
    if (node === null) return undefined;
    while (!node.leaf) {
      const i = branchLowerBound(node, h, l);
      if (i === node.n) return undefined;
      node = node.slots[i] as MapleNode;
    }
    const j = leafLowerBound(node, h, l);
    if (j === node.n) return undefined;
    const k = node.keys;
    const b = j * LEAF_STRIDE;
    const sh = k[b]!;
    return sh < h || (sh === h && k[b + 1]! <= l) ? (node.slots[j] as T) : undefined;
  }

  /**
   * Seeks the path to the first entry that ends at or after (sH, sL); true when that entry also
   * starts at or before (lH, lL), i.e. overlaps the range. store() and insert() both start here.
   */
  #seekOverlap(sH: number, sL: number, lH: number, lL: number): boolean {
    const p = this.#path;
    if (!p.seek(this.#s, sH, sL) || !p.valid()) return false;
    const k = p.leaf().keys;
    const b = p.base();
    const eH = k[b]!;
    return eH < lH || (eH === lH && k[b + 1]! <= lL);
  }

  /**
   * Make [start, last] map to `entry`, overwriting whatever it covers. An entry only partly covered keeps
   * its uncovered pieces with the same value (so a store inside one entry splits it into three).
   * Storing `undefined` clears the range, as storing NULL does in the kernel.
   */
  store(start: bigint, last: bigint, entry: T | undefined): void {
    checkRange(start, last);
    const s = this.#s;
    const p = this.#path;
    split(start);
    const sH = out.h;
    const sL = out.l;
    split(last);
    const lH = out.h;
    const lL = out.l;
    if (this.#seekOverlap(sH, sL, lH, lL)) {
      const k = p.leaf().keys;
      const b = p.base();
      if (k[b] === sH && k[b + 1] === sL && k[b + 2] === lH && k[b + 3] === lL) {
        // exactly this range: replace or clear the entry in place
        if (entry === undefined) removeAt(s, p);
        else {
          p.leaf().slots[p.pos] = entry;
          s.version++;
        }
        return;
      }
      this.#replace(start, last, entry);
      return;
    }
    if (entry !== undefined) insertAt(s, p, sH, sL, lH, lL, entry);
  }

  /** Store [start, last] → entry only if no index in it is occupied; otherwise throw RangeOccupiedError. */
  insert(start: bigint, last: bigint, entry: T): void {
    checkRange(start, last);
    if (entry === undefined)
      throw new TypeError("entry is undefined; use erase() to remove, or store a value");
    const s = this.#s;
    const p = this.#path;
    split(start);
    const sH = out.h;
    const sL = out.l;
    split(last);
    const lH = out.h;
    const lL = out.l;
    if (this.#seekOverlap(sH, sL, lH, lL)) {
      const k = p.leaf().keys;
      const b = p.base();
      throw new RangeOccupiedError(start, last, join(k[b]!, k[b + 1]!), join(k[b + 2]!, k[b + 3]!));
    }
    insertAt(s, p, sH, sL, lH, lL, entry);
  }

  /** Remove the whole entry containing `index`; returns it, or undefined if `index` is free. */
  erase(index: bigint): T | undefined {
    checkSplit(index, "index");
    const p = this.#path;
    if (!(p.seek(this.#s, out.h, out.l) && p.valid() && this.#startsAtOrBefore(p, out.h, out.l)))
      return undefined;
    return removeAt(this.#s, p) as T;
  }

  /** First entry intersecting [from, max], or undefined. */
  find(from: bigint, max: bigint = MAX_INDEX): MapleEntry<T> | undefined {
    checkRange(from, max);
    const p = this.#path;
    split(from);
    if (!(p.seek(this.#s, out.h, out.l) && p.valid())) return undefined;
    split(max);
    return this.#startsAtOrBefore(p, out.h, out.l) ? this.#entryAt(p) : undefined;
  }

  /** First entry that starts after `index` (so: after the entry containing it, if any). */
  next(index: bigint): MapleEntry<T> | undefined {
    checkIndex(index, "index");
    const p = this.#path;
    split(index);
    if (!(p.seek(this.#s, out.h, out.l) && p.valid())) return undefined;
    if (this.#startsAtOrBefore(p, out.h, out.l) && !p.next()) return undefined;
    return this.#entryAt(p);
  }

  /** Last entry that ends before `index` (so: before the entry containing it, if any). */
  prev(index: bigint): MapleEntry<T> | undefined {
    checkIndex(index, "index");
    const p = this.#path;
    split(index);
    if (!p.seek(this.#s, out.h, out.l)) return undefined;
    return p.prev() ? this.#entryAt(p) : undefined;
  }

  /** Entries intersecting [from, max] in index order. Throws if the tree changes while iterating. */
  entries(from: bigint = 0n, max: bigint = MAX_INDEX): IterableIterator<MapleEntry<T>> {
    checkRange(from, max);
    return this.#iterate(from, max);
  }

  /**
   * entries(from, max) as an array, walked without a generator (no iterator object or result per
   * entry): the grant path's lookups, which read every entry before they change the tree.
   */
  collect(from: bigint, max: bigint): MapleEntry<T>[] {
    checkRange(from, max);
    const found: MapleEntry<T>[] = [];
    const p = this.#path;
    split(from);
    if (!(p.seek(this.#s, out.h, out.l) && p.valid())) return found;
    split(max);
    const mH = out.h;
    const mL = out.l;
    do {
      if (!this.#startsAtOrBefore(p, mH, mL)) break;
      found.push(this.#entryAt(p));
    } while (p.next());
    return found;
  }

  [Symbol.iterator](): IterableIterator<MapleEntry<T>> {
    return this.#iterate(0n, MAX_INDEX);
  }

  /** Lowest aligned start of a free run of `size` indices inside [min, max]; throws NoSpaceError. */
  allocRange(size: bigint, options?: AllocOptions): bigint {
    return findFree(this.#s, size, options, false);
  }

  /** Highest aligned start of a free run of `size` indices inside [min, max]; throws NoSpaceError. */
  allocRangeReverse(size: bigint, options?: AllocOptions): bigint {
    return findFree(this.#s, size, options, true);
  }

  /** allocRange (or allocRangeReverse with reverse: true) and insert in one call; returns the start. */
  allocate(size: bigint, entry: T, options?: AllocOptions & { reverse?: boolean }): bigint {
    if (entry === undefined) throw new TypeError("entry is undefined; allocate a value");
    const start = findFree(this.#s, size, options, options?.reverse === true);
    this.insert(start, start + size - 1n, entry);
    return start;
  }

  clear(): void {
    const s = this.#s;
    s.root = null;
    s.height = 0;
    s.count = 0;
    s.version++;
  }

  /** Node structure as JSON-able objects; `describe` renders each entry (default: as is). */
  dump(describe: (entry: T) => unknown = (e) => e): Dump {
    return dump(this.#s, describe);
  }

  /** Check every invariant; throws an Error describing the first violation. */
  validate(): void {
    validate(this.#s);
  }

  [INTERNALS](): TreeState {
    return this.#s;
  }

  #startsAtOrBefore(p: Path, h: number, l: number): boolean {
    const k = p.leaf().keys;
    const b = p.base();
    const sh = k[b]!;
    return sh < h || (sh === h && k[b + 1]! <= l);
  }

  #entryAt(p: Path): MapleEntry<T> {
    const leaf = p.leaf();
    const k = leaf.keys;
    const b = p.base();
    return { start: join(k[b]!, k[b + 1]!), last: join(k[b + 2]!, k[b + 3]!), entry: leaf.slots[p.pos] as T };
  }

  *#iterate(from: bigint, max: bigint): Generator<MapleEntry<T>> {
    const s = this.#s;
    const p = new Path();
    split(from);
    if (!(p.seek(s, out.h, out.l) && p.valid())) return;
    const version = s.version;
    split(max);
    const mH = out.h;
    const mL = out.l;
    do {
      if (!this.#startsAtOrBefore(p, mH, mL)) return;
      yield this.#entryAt(p);
      if (s.version !== version) {
        throw new Error("maple tree changed during iteration; collect entries first, then modify");
      }
    } while (p.next());
  }

  /** Slow path of store: take out every entry that [start, last] touches, put back the uncovered pieces. */
  #replace(start: bigint, last: bigint, entry: T | undefined): void {
    const victims = Array.from(this.#iterate(start, last));
    if (start === 0n && last === MAX_INDEX) {
      this.clear();
    } else {
      const p = this.#path;
      for (const v of victims) {
        split(v.start);
        p.seek(this.#s, out.h, out.l);
        removeAt(this.#s, p);
      }
    }
    const head = victims[0]!;
    const tail = victims[victims.length - 1]!;
    if (head.start < start) this.#put(head.start, start - 1n, head.entry);
    if (entry !== undefined) this.#put(start, last, entry);
    if (tail.last > last) this.#put(last + 1n, tail.last, tail.entry);
  }

  /** Insert a range known to be free. */
  #put(start: bigint, last: bigint, entry: unknown): void {
    split(start);
    const sH = out.h;
    const sL = out.l;
    split(last);
    this.#path.seek(this.#s, sH, sL);
    insertAt(this.#s, this.#path, sH, sL, out.h, out.l, entry);
  }
}
