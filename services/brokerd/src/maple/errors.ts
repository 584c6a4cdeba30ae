// maple/errors.ts — owns the errors a MapleTree throws on well-formed requests it cannot satisfy.
// (Malformed arguments — negative, above 2^64-1, start > last, bad alignment — are RangeErrors from key.ts/alloc.ts.)

import { show } from "./key.js";

/** allocRange / allocRangeReverse / allocate found no free, aligned range of the requested size in the window. */
export class NoSpaceError extends Error {
  override readonly name = "NoSpaceError";
  constructor(
    readonly size: bigint,
    readonly align: bigint,
    readonly min: bigint,
    readonly max: bigint,
  ) {
    super(
      `no free range of size ${show(size)} aligned to ${show(align)} inside [${show(min)}, ${show(max)}]; ` +
        "erase entries in that window, widen min/max, or ask for less",
    );
  }
}

/** insert() found part of the requested range already occupied. */
export class RangeOccupiedError extends Error {
  override readonly name = "RangeOccupiedError";
  constructor(
    readonly start: bigint,
    readonly last: bigint,
    readonly occupiedStart: bigint,
    readonly occupiedLast: bigint,
  ) {
    super(
      `cannot insert [${show(start)}, ${show(last)}]: [${show(occupiedStart)}, ${show(occupiedLast)}] is already occupied; ` +
        "erase it first, or use store() to overwrite",
    );
  }
}
