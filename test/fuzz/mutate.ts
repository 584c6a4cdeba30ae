// mutate.ts: turns a valid message into a hostile one, at two levels. Byte mutations (flips,
// interesting bytes, inserts, deletes, truncation, splices) find what a parser does with noise;
// protobuf wire mutations (wrong field numbers and wire types, lying lengths, overlong or 11-byte
// varints, invalid UTF-8, duplicated and unknown fields) reach the code behind the decoder, which
// pure noise rarely gets past. Pure functions of (input, Prng): no I/O.
import type { Prng } from "./prng.js";

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x0a, 0x08, 0x12];

/** Varint values that sit on encoding and integer-width boundaries. */
export const INTERESTING_VARINTS: readonly bigint[] = [
  0n,
  1n,
  2n,
  127n,
  128n,
  4095n,
  4096n,
  4097n,
  0x7fffffffn,
  0x80000000n,
  0xffffffffn,
  0x1_0000_0000n,
  (1n << 40n) - 1n,
  1n << 40n,
  (1n << 53n) + 1n,
  (1n << 63n) - 1n,
  1n << 63n,
  (1n << 64n) - 4096n,
  (1n << 64n) - 1n,
];

export function encodeVarint(v: bigint): Buffer {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return Buffer.from(out);
}

export interface WireField {
  field: number;
  wireType: number;
  /** The value's bytes as on the wire, without the tag (for wire type 2: without the length). */
  value: Buffer;
}

function readVarint(b: Buffer, pos: number): [bigint, number] | null {
  let v = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos + i >= b.length) return null;
    const byte = b[pos + i]!;
    v |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) return [v, pos + i + 1];
  }
  return null;
}

/** Splits a message into its top-level fields, or null if it is not well-formed wire data. */
export function parseWire(b: Buffer): WireField[] | null {
  const fields: WireField[] = [];
  let pos = 0;
  while (pos < b.length) {
    const tag = readVarint(b, pos);
    if (!tag) return null;
    const [t, afterTag] = tag;
    const field = Number(t >> 3n);
    const wireType = Number(t & 7n);
    let end: number;
    let start = afterTag;
    if (wireType === 0) {
      const v = readVarint(b, afterTag);
      if (!v) return null;
      end = v[1];
    } else if (wireType === 1) {
      end = afterTag + 8;
    } else if (wireType === 5) {
      end = afterTag + 4;
    } else if (wireType === 2) {
      const l = readVarint(b, afterTag);
      if (!l) return null;
      start = l[1];
      end = start + Number(l[0]);
    } else {
      return null;
    }
    if (end > b.length) return null;
    fields.push({ field, wireType, value: b.subarray(start, end) });
    pos = end;
  }
  return fields;
}

export function encodeField(f: WireField): Buffer {
  const tag = encodeVarint((BigInt(f.field) << 3n) | BigInt(f.wireType & 7));
  if (f.wireType === 2) return Buffer.concat([tag, encodeVarint(BigInt(f.value.length)), f.value]);
  return Buffer.concat([tag, f.value]);
}

export function encodeWire(fields: readonly WireField[]): Buffer {
  return Buffer.concat(fields.map(encodeField));
}

const INVALID_UTF8 = [
  Buffer.from([0xff]),
  Buffer.from([0xc3]), // a lead byte with no continuation
  Buffer.from([0xed, 0xa0, 0x80]), // an encoded UTF-16 surrogate
  Buffer.from([0xf4, 0x90, 0x80, 0x80]), // above U+10FFFF
  Buffer.from([0xc0, 0xaf]), // overlong '/'
];

type WireMutation = (fields: WireField[], rng: Prng) => Buffer;

const WIRE_MUTATIONS: Record<string, WireMutation> = {
  fieldNumber(fields, rng) {
    const f = rng.pick(fields);
    f.field = rng.pick([0, 1, 2, 3, 7, 15, 16, 2047, 0x1fffffff, rng.range(1, 40)]);
    return encodeWire(fields);
  },
  wireType(fields, rng) {
    const f = rng.pick(fields);
    f.wireType = rng.pick([0, 1, 2, 3, 4, 5, 6, 7]);
    return encodeWire(fields);
  },
  varintValue(fields, rng) {
    const f = rng.pick(fields);
    f.wireType = 0;
    f.value = encodeVarint(rng.pick(INTERESTING_VARINTS));
    return encodeWire(fields);
  },
  overlongVarint(fields, rng) {
    // 0 written in 10 bytes is legal; 11 continuation bytes are not.
    const f = rng.pick(fields);
    f.wireType = 0;
    const continuations = rng.chance(0.5) ? 9 : 10;
    f.value = Buffer.from([...Array(continuations).fill(0x80), 0x00]);
    return encodeWire(fields);
  },
  lyingLength(fields, rng) {
    const i = rng.int(fields.length);
    const f = fields[i]!;
    const head = encodeWire(fields.slice(0, i));
    const tag = encodeVarint((BigInt(f.field) << 3n) | 2n);
    const claimed = rng.pick([f.value.length + 1, f.value.length + 1000, 0x7fffffff, 0xffffffff, 2 ** 53]);
    return Buffer.concat([head, tag, encodeVarint(BigInt(claimed)), f.value]);
  },
  invalidUtf8(fields, rng) {
    const strings = fields.filter((f) => f.wireType === 2);
    const f = strings.length > 0 ? rng.pick(strings) : rng.pick(fields);
    f.wireType = 2;
    const bad = rng.pick(INVALID_UTF8);
    const at = rng.int(f.value.length + 1);
    f.value = Buffer.concat([f.value.subarray(0, at), bad, f.value.subarray(at)]);
    return encodeWire(fields);
  },
  duplicate(fields, rng) {
    const f = rng.pick(fields);
    const copies = Array.from({ length: rng.range(1, 50) }, () => ({ ...f }));
    return encodeWire([...fields, ...copies]);
  },
  unknownField(fields, rng) {
    const f: WireField = {
      field: rng.range(16, 5000),
      wireType: rng.pick([0, 2, 5]),
      value: Buffer.alloc(0),
    };
    f.value =
      f.wireType === 0
        ? encodeVarint(rng.pick(INTERESTING_VARINTS))
        : rng.bytes(f.wireType === 5 ? 4 : rng.size(300));
    const out = [...fields];
    out.splice(rng.int(out.length + 1), 0, f);
    return encodeWire(out);
  },
  group(fields, rng) {
    // Wire types 3/4 (groups) are deprecated and must not appear in proto3 messages.
    const g = Buffer.concat([encodeVarint((BigInt(rng.range(1, 9)) << 3n) | 3n), encodeWire(fields)]);
    return rng.chance(0.5) ? g : Buffer.concat([g, encodeVarint((BigInt(rng.range(1, 9)) << 3n) | 4n)]);
  },
  bigString(fields, rng) {
    const f = rng.pick(fields);
    f.wireType = 2;
    f.value = Buffer.alloc(rng.pick([256, 1024, 4096, 65536, 70000]), rng.pick([0x41, 0x00, 0xff]));
    return encodeWire(fields);
  },
};

type ByteMutation = (b: Buffer, rng: Prng, others: readonly Buffer[]) => Buffer;

const BYTE_MUTATIONS: Record<string, ByteMutation> = {
  flipBit(b, rng) {
    if (b.length === 0) return rng.bytes(1);
    const c = Buffer.from(b);
    const i = rng.int(c.length);
    c[i] = c[i]! ^ (1 << rng.int(8));
    return c;
  },
  interestingByte(b, rng) {
    if (b.length === 0) return Buffer.from([rng.pick(INTERESTING_BYTES)]);
    const c = Buffer.from(b);
    c[rng.int(c.length)] = rng.pick(INTERESTING_BYTES);
    return c;
  },
  insert(b, rng) {
    const at = rng.int(b.length + 1);
    return Buffer.concat([b.subarray(0, at), rng.bytes(rng.range(1, 16)), b.subarray(at)]);
  },
  erase(b, rng) {
    if (b.length === 0) return b;
    const at = rng.int(b.length);
    return Buffer.concat([b.subarray(0, at), b.subarray(at + rng.range(1, b.length - at))]);
  },
  duplicateRange(b, rng) {
    if (b.length === 0) return b;
    const at = rng.int(b.length);
    const piece = b.subarray(at, at + rng.range(1, 32));
    return Buffer.concat([b.subarray(0, at), piece, piece, b.subarray(at)]);
  },
  truncate(b, rng) {
    return b.subarray(0, rng.int(b.length + 1));
  },
  append(b, rng) {
    return Buffer.concat([b, rng.bytes(rng.size(512))]);
  },
  splice(b, rng, others) {
    if (others.length === 0) return b;
    const o = rng.pick(others);
    return Buffer.concat([b.subarray(0, rng.int(b.length + 1)), o.subarray(rng.int(o.length + 1))]);
  },
  noise(_b, rng) {
    return rng.bytes(rng.size(2048));
  },
};

export const WIRE_MUTATION_NAMES = Object.keys(WIRE_MUTATIONS);
export const BYTE_MUTATION_NAMES = Object.keys(BYTE_MUTATIONS);

/** One wire-level mutation if the input parses into at least one field, else one byte mutation. */
export function mutateWire(b: Buffer, rng: Prng): { bytes: Buffer; how: string } {
  const fields = parseWire(b);
  if (!fields || fields.length === 0) return mutateBytes(b, rng, []);
  const how = rng.pick(WIRE_MUTATION_NAMES);
  return {
    bytes: WIRE_MUTATIONS[how]!(
      fields.map((f) => ({ ...f })),
      rng,
    ),
    how: `wire.${how}`,
  };
}

export function mutateBytes(b: Buffer, rng: Prng, others: readonly Buffer[]): { bytes: Buffer; how: string } {
  const how = rng.pick(BYTE_MUTATION_NAMES);
  return { bytes: BYTE_MUTATIONS[how]!(b, rng, others), how: `byte.${how}` };
}

/** 1..4 stacked mutations, wire-level ones more often than noise. */
export function mutate(
  b: Buffer,
  rng: Prng,
  others: readonly Buffer[] = [],
): { bytes: Buffer; how: string[] } {
  const how: string[] = [];
  let cur = b;
  const rounds = rng.range(1, 4);
  for (let i = 0; i < rounds; i++) {
    const m = rng.chance(0.6) ? mutateWire(cur, rng) : mutateBytes(cur, rng, others);
    cur = m.bytes;
    how.push(m.how);
  }
  return { bytes: cur, how };
}
