// The workload protocol's grant and release replies (WorkloadReply{status, grant|release: FdReply},
// proto/vfiobroker/v1/workload.proto), encoded by hand: two of them go out per grant, and
// protobuf-es's reflective create + toBinary was the largest encode cost on that path. The bytes are
// exactly protobuf-es's (fields in number order, proto3 defaults left out; reply-codec.test.ts
// compares them on random replies). Anything else (a batch's items, an error) is left to
// protobuf-es: encodeWorkloadFdReply returns undefined. Pure: no I/O, no state.

import type { FdReplyInit } from "./adapter.js";

/** WorkloadReply's field numbers for the two kinds encoded here. */
const KIND_FIELD = { grant: 19, release: 20 } as const;
/** The scratch buffer; a reply that does not fit (long strings) is left to protobuf-es. */
const SCRATCH = 1024;
const scratch = new Uint8Array(SCRATCH);
/** The WorkloadReply's own status, tag and length (at most 16 bytes), before they go in front of the body. */
const headScratch = new Uint8Array(16);
const TWO_53 = 2n ** 53n;
const utf8 = new TextEncoder();

class Writer {
  n = 0;
  constructor(readonly buf: Uint8Array) {}

  varint(x: number): void {
    while (x >= 128) {
      this.buf[this.n++] = (x % 128) | 128;
      x = Math.floor(x / 128);
    }
    this.buf[this.n++] = x;
  }

  u64(field: number, v: bigint | undefined): void {
    if (v === undefined || v === 0n) return;
    this.varint(field << 3);
    if (v < TWO_53) {
      this.varint(Number(v));
      return;
    }
    let x = BigInt.asUintN(64, v);
    while (x >= 128n) {
      this.buf[this.n++] = Number(x & 127n) | 128;
      x >>= 7n;
    }
    this.buf[this.n++] = Number(x);
  }

  /** uint32 and enums (never negative here). */
  u32(field: number, v: number | undefined): void {
    if (!v) return;
    this.varint(field << 3);
    this.varint(v >>> 0);
  }

  str(field: number, s: string | undefined): void {
    if (!s) return;
    this.varint((field << 3) | 2);
    const len = Buffer.byteLength(s);
    this.varint(len);
    utf8.encodeInto(s, this.buf.subarray(this.n, this.n + len));
    this.n += len;
  }
}

/** Writes FdReply's fields (no items) into w. */
function fdReply(w: Writer, r: FdReplyInit): void {
  w.u32(1, r.status);
  w.str(2, r.message);
  w.u64(3, r.cookie);
  w.u64(4, r.mmapOffset);
  w.u64(5, r.length);
  w.u32(6, r.prot);
  w.u32(7, r.effectiveAttribute);
  w.u32(8, r.backing);
  w.str(9, r.grpcCode);
  w.u32(10, r.regionIndex);
  w.u64(11, r.regionOffset);
  w.str(12, r.fallbackReason);
  w.u32(13, r.requestedAttribute);
  w.u32(14, r.refs);
}

/** Bytes the strings of r take at most, with their tags and lengths. */
function stringBytes(r: FdReplyInit): number {
  let n = 0;
  for (const s of [r.message, r.grpcCode, r.fallbackReason]) if (s) n += 3 * s.length + 8;
  return n;
}

/**
 * WorkloadReply{status: the FdReply's status, kind: k = r} as protobuf-es would encode it, or
 * undefined for what this encoder leaves to protobuf-es (items, very long strings).
 */
export function encodeWorkloadFdReply(k: "grant" | "release", r: FdReplyInit): Uint8Array | undefined {
  if (r.items !== undefined && r.items.length > 0) return undefined;
  // Fixed fields take at most 12 tags of 11 bytes; strings at most 3 bytes a UTF-16 unit.
  if (12 * 11 + stringBytes(r) + 16 > SCRATCH) return undefined;
  const body = new Writer(scratch);
  body.n = 16; // room for the WorkloadReply's own status, tag and length in front
  fdReply(body, r);
  const len = body.n - 16;
  const head = new Writer(headScratch);
  head.u32(1, r.status);
  head.varint((KIND_FIELD[k] << 3) | 2);
  head.varint(len);
  // The head goes right in front of the body in the scratch; the reply is one copy of both.
  const start = 16 - head.n;
  scratch.set(headScratch.subarray(0, head.n), start);
  return take(scratch, start, body.n);
}

/** Where replies are cut from: views of one shared ArrayBuffer, a fresh one when it is used up. */
const POOL = 8192;
let pool = new ArrayBuffer(POOL);
let poolUsed = 0;

/**
 * A copy of src[from, to) in its own view: a reply made per exchange, without an ArrayBuffer (a
 * backing store, and the sweeper's work) of its own. The views stay valid (they keep their pool).
 */
function take(src: Uint8Array, from: number, to: number): Uint8Array {
  const n = to - from;
  if (poolUsed + n > POOL) {
    pool = new ArrayBuffer(POOL);
    poolUsed = 0;
  }
  const out = new Uint8Array(pool, poolUsed, n);
  poolUsed += (n + 7) & ~7;
  out.set(src.subarray(from, to));
  return out;
}
