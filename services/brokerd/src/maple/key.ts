// maple/key.ts — owns the 64-bit index: `bigint` at the API, a (hi, lo) pair of uint32 numbers inside.
// Every bigint that enters the tree is checked and split here; every bigint that leaves is joined here.
// Never loses precision: values < 2^53 take the fast Number path, the rest go through bigint shifts.

/** Largest index: 2^64 - 1. */
export const MAX_INDEX = 0xffff_ffff_ffff_ffffn;
/** First integer a double cannot tell from its neighbour: 2^53. */
const TWO53 = 9007199254740992;
export const TWO32 = 4294967296;
const U32 = 0xffff_ffffn;

/** Scratch output of split(): one per module, so splitting allocates nothing. */
export const out = { h: 0, l: 0 };

/** Throw unless `k` is a bigint in [0, 2^64-1]; `what` names the argument in the message. */
export function checkIndex(k: unknown, what: string): asserts k is bigint {
  if (typeof k !== "bigint") {
    throw new TypeError(`${what} must be a bigint, got ${typeof k} ${String(k)}; pass BigInt(${String(k)})`);
  }
  if (k < 0n) {
    throw new RangeError(`${what} ${k} is negative; maple indices are unsigned 64-bit, use 0 .. 2^64-1`);
  }
  if (k > MAX_INDEX) {
    throw new RangeError(`${what} ${k} is above 2^64-1 (${MAX_INDEX}); use a value in 0 .. 2^64-1`);
  }
}

/** Throw unless [start, last] is a well-formed inclusive range. */
export function checkRange(start: unknown, last: unknown): asserts start is bigint {
  checkIndex(start, "start");
  checkIndex(last, "last");
  if (start > last) {
    throw new RangeError(
      `start ${start} is greater than last ${last}; ranges are inclusive [start, last], pass start <= last`,
    );
  }
}

/** Split a checked index into out.h / out.l. */
export function split(k: bigint): void {
  const n = Number(k);
  if (n < TWO53) {
    // Number(k) < 2^53 exactly when k < 2^53 (integers round to >= 2^53 from above), so n is exact
    const h = Math.floor(n / TWO32);
    out.h = h;
    out.l = n - h * TWO32;
  } else {
    out.h = Number(k >> 32n);
    out.l = Number(k & U32);
  }
}

/**
 * checkIndex + split for the hot paths (load, erase): one bigint->double conversion when the index
 * is a bigint in [0, 2^53), the full checks otherwise.
 */
export function checkSplit(k: bigint, what: string): void {
  if (typeof k === "bigint") {
    const n = Number(k);
    if (n >= 0 && n < TWO53) {
      const h = Math.floor(n / TWO32);
      out.h = h;
      out.l = n - h * TWO32;
      return;
    }
  }
  checkIndex(k, what);
  split(k);
}

/** Join a (hi, lo) pair back into a bigint. */
export function join(h: number, l: number): bigint {
  return h < 0x20_0000 ? BigInt(h * TWO32 + l) : (BigInt(h) << 32n) | BigInt(l);
}

/** (aH,aL) < (bH,bL) as unsigned 64-bit values. */
export function lt(aH: number, aL: number, bH: number, bL: number): boolean {
  return aH < bH || (aH === bH && aL < bL);
}

/** True if `a` is a power of two (1, 2, 4, ... 2^63). */
export function isPowerOfTwo(a: bigint): boolean {
  return a > 0n && (a & (a - 1n)) === 0n;
}

/** Decimal and hex, for error messages: "4096 (0x1000)". */
export function show(k: bigint): string {
  return k < 10n ? k.toString() : `${k} (0x${k.toString(16)})`;
}
