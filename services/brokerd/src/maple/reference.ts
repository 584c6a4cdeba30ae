// maple/reference.ts — owns the reference model: the obviously-correct sorted array of [start, last, entry]
// that the property tests compare MapleTree against and the benchmark races it against. O(n) updates,
// O(log n) lookups by binary search. Same API and same errors as MapleTree; no cleverness allowed here.

import type { AllocOptions } from "./alloc.js";
import { NoSpaceError, RangeOccupiedError } from "./errors.js";
import { checkIndex, checkRange, isPowerOfTwo, MAX_INDEX } from "./key.js";
import type { MapleEntry } from "./tree.js";

export class ReferenceMaple<T> {
  starts: bigint[] = [];
  lasts: bigint[] = [];
  values: T[] = [];

  /** Build from entries already sorted and disjoint (benchmark setup). */
  static fromSorted<T>(entries: Iterable<MapleEntry<T>>): ReferenceMaple<T> {
    const r = new ReferenceMaple<T>();
    for (const e of entries) {
      r.starts.push(e.start);
      r.lasts.push(e.last);
      r.values.push(e.entry);
    }
    return r;
  }

  get size(): number {
    return this.starts.length;
  }

  /** First slot whose last >= index. */
  lowerBound(index: bigint): number {
    const lasts = this.lasts;
    let lo = 0;
    let hi = lasts.length;
    while (lo < hi) {
      const m = (lo + hi) >>> 1;
      if (lasts[m]! < index) lo = m + 1;
      else hi = m;
    }
    return lo;
  }

  load(index: bigint): T | undefined {
    checkIndex(index, "index");
    const i = this.lowerBound(index);
    return i < this.starts.length && this.starts[i]! <= index ? this.values[i] : undefined;
  }

  store(start: bigint, last: bigint, entry: T | undefined): void {
    checkRange(start, last);
    const i = this.lowerBound(start);
    let j = i;
    while (j < this.starts.length && this.starts[j]! <= last) j++;
    const add: [bigint, bigint, T][] = [];
    if (j > i) {
      if (this.starts[i]! < start) add.push([this.starts[i]!, start - 1n, this.values[i]!]);
    }
    if (entry !== undefined) add.push([start, last, entry]);
    if (j > i && this.lasts[j - 1]! > last) add.push([last + 1n, this.lasts[j - 1]!, this.values[j - 1]!]);
    this.starts.splice(i, j - i, ...add.map((a) => a[0]));
    this.lasts.splice(i, j - i, ...add.map((a) => a[1]));
    this.values.splice(i, j - i, ...add.map((a) => a[2]));
  }

  insert(start: bigint, last: bigint, entry: T): void {
    checkRange(start, last);
    const i = this.lowerBound(start);
    if (i < this.starts.length && this.starts[i]! <= last) {
      throw new RangeOccupiedError(start, last, this.starts[i]!, this.lasts[i]!);
    }
    this.starts.splice(i, 0, start);
    this.lasts.splice(i, 0, last);
    this.values.splice(i, 0, entry);
  }

  erase(index: bigint): T | undefined {
    checkIndex(index, "index");
    const i = this.lowerBound(index);
    if (!(i < this.starts.length && this.starts[i]! <= index)) return undefined;
    const v = this.values[i];
    this.starts.splice(i, 1);
    this.lasts.splice(i, 1);
    this.values.splice(i, 1);
    return v;
  }

  #at(i: number): MapleEntry<T> | undefined {
    return i >= 0 && i < this.starts.length
      ? { start: this.starts[i]!, last: this.lasts[i]!, entry: this.values[i]! }
      : undefined;
  }

  find(from: bigint, max: bigint = MAX_INDEX): MapleEntry<T> | undefined {
    checkRange(from, max);
    const i = this.lowerBound(from);
    return i < this.starts.length && this.starts[i]! <= max ? this.#at(i) : undefined;
  }

  next(index: bigint): MapleEntry<T> | undefined {
    checkIndex(index, "index");
    let i = 0;
    while (i < this.starts.length && this.starts[i]! <= index) i++;
    return this.#at(i);
  }

  prev(index: bigint): MapleEntry<T> | undefined {
    checkIndex(index, "index");
    let i = this.starts.length - 1;
    while (i >= 0 && this.lasts[i]! >= index) i--;
    return this.#at(i);
  }

  /** As entries(from, max) (MapleTree.collect's model). */
  collect(from: bigint, max: bigint): MapleEntry<T>[] {
    return this.entries(from, max);
  }

  entries(from: bigint = 0n, max: bigint = MAX_INDEX): MapleEntry<T>[] {
    const res: MapleEntry<T>[] = [];
    for (let i = 0; i < this.starts.length; i++) {
      if (this.lasts[i]! >= from && this.starts[i]! <= max) res.push(this.#at(i)!);
    }
    return res;
  }

  /** Lowest fit: walk the free runs upward from the one at or after min. */
  allocRange(size: bigint, opts: AllocOptions = {}): bigint {
    const { align, min, max } = this.#opts(size, opts);
    const n = this.starts.length;
    for (let i = this.lowerBound(min); i <= n; i++) {
      // free run between entry i-1 and entry i
      const a = i === 0 ? 0n : this.lasts[i - 1]! + 1n;
      const b = i === n ? MAX_INDEX : this.starts[i]! - 1n;
      if (a > max) break;
      const lo = a > min ? a : min;
      const hi = b < max ? b : max;
      if (a > b || lo > hi) continue;
      const s = ((lo + align - 1n) / align) * align;
      if (s + size - 1n <= hi) return s;
    }
    throw new NoSpaceError(size, align, min, max);
  }

  /** Highest fit: walk the free runs downward from the one at or before max. */
  allocRangeReverse(size: bigint, opts: AllocOptions = {}): bigint {
    const { align, min, max } = this.#opts(size, opts);
    const n = this.starts.length;
    for (let i = this.lowerBound(max); i >= 0; i--) {
      const a = i === 0 ? 0n : this.lasts[i - 1]! + 1n;
      const b = i === n ? MAX_INDEX : this.starts[i]! - 1n;
      if (b < min) break;
      const lo = a > min ? a : min;
      const hi = b < max ? b : max;
      if (a > b || lo > hi || hi - lo + 1n < size) continue;
      const s = ((hi - size + 1n) / align) * align;
      if (s >= lo) return s;
    }
    throw new NoSpaceError(size, align, min, max);
  }

  #opts(size: bigint, opts: AllocOptions): { align: bigint; min: bigint; max: bigint } {
    const align = opts.align ?? 1n;
    const min = opts.min ?? 0n;
    const max = opts.max ?? MAX_INDEX;
    if (size < 1n || size > MAX_INDEX + 1n) throw new RangeError(`size ${size} is outside 1 .. 2^64`);
    if (!isPowerOfTwo(align) || align > 1n << 63n)
      throw new RangeError(`align ${align} is not a power of two`);
    if (min > max) throw new RangeError(`min ${min} is greater than max ${max}`);
    return { align, min, max };
  }
}
