// messages.ts: builds random but well-typed protobuf messages from a schema (any protobuf-es
// DescMessage), so every BrokerService method is covered without code per method. Values come from
// boundary lists and from a pool of ids brokerd really issued on this connection (device ids,
// device-file ids, cookies, region indexes), so requests reach the handlers' checks, not only
// "not found". The encoded bytes are what mutate.ts then breaks.
import {
  create,
  type DescEnum,
  type DescField,
  type DescMessage,
  type MessageInitShape,
  ScalarType,
  toBinary,
} from "@bufbuild/protobuf";
import { INTERESTING_VARINTS } from "./mutate.js";
import type { Prng } from "./prng.js";

/** Ids brokerd handed out, keyed by the request field names that take them. */
export interface IdPool {
  deviceIds: string[];
  deviceFileIds: bigint[];
  cookies: bigint[];
  regionIndexes: number[];
  pageSize: bigint;
}

export function emptyPool(): IdPool {
  return {
    deviceIds: ["sim0", "sim1"],
    deviceFileIds: [],
    cookies: [],
    regionIndexes: [0, 1, 2],
    pageSize: 4096n,
  };
}

const U32_EDGES = [
  0, 1, 2, 5, 6, 7, 8, 9, 255, 256, 4095, 4096, 4097, 65535, 0x7fffffff, 0x80000000, 0xffffffff,
];
const STRING_EDGES = [
  "",
  "sim",
  "sim*",
  "*",
  "../sim0",
  "sim0\u0000",
  "SIM0",
  "\u{1f600}",
  "x".repeat(200),
  "x".repeat(5000),
];

/**
 * realistic: the value a correct client would send (a real id, a page-aligned range, a defined enum
 * value), so that a request gets past the first checks and reaches the state behind them.
 */
function u64For(name: string, rng: Prng, pool: IdPool, realistic: boolean): bigint {
  const ids = name === "deviceFileId" ? pool.deviceFileIds : name === "cookie" ? pool.cookies : [];
  if (realistic) {
    if (ids.length > 0) return rng.pick(ids);
    if (name === "offset") return pool.pageSize * BigInt(rng.range(0, 3));
    if (name === "length") return pool.pageSize * BigInt(rng.range(1, 4));
  }
  if (ids.length > 0 && rng.chance(0.6)) {
    const id = rng.pick(ids);
    return rng.chance(0.8) ? id : BigInt.asUintN(64, id + BigInt(rng.pick([-1, 1, 4096, -4096])));
  }
  if ((name === "offset" || name === "length") && rng.chance(0.5))
    return pool.pageSize * BigInt(rng.range(0, 8)) + BigInt(rng.pick([0, 0, 0, 1, -1]));
  return rng.pick(INTERESTING_VARINTS);
}

function scalarFor(
  field: DescField,
  scalar: ScalarType,
  rng: Prng,
  pool: IdPool,
  realistic: boolean,
): unknown {
  const name = field.localName;
  switch (scalar) {
    case ScalarType.STRING:
      if (name === "deviceId" && (realistic || rng.chance(0.7))) return rng.pick(pool.deviceIds);
      return rng.chance(0.7) ? rng.pick(STRING_EDGES) : rng.bytes(rng.size(64)).toString("base64");
    case ScalarType.BYTES:
      if (realistic) return rng.bytes(rng.pick([1, 4, 8]));
      return rng.bytes(rng.chance(0.3) ? rng.pick([4095, 4096, 4097, 65536]) : rng.size(8192));
    case ScalarType.BOOL:
      return rng.chance(0.5);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return u64For(name, rng, pool, realistic);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return BigInt.asIntN(64, u64For(name, rng, pool, realistic));
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      if (name === "regionIndex" && (realistic || rng.chance(0.7))) return rng.pick(pool.regionIndexes);
      if (name === "length" && realistic) return rng.pick([1, 4, 8]);
      if (name === "length" && rng.chance(0.5)) return rng.pick([0, 1, 4, 8, 4095, 4096, 4097]);
      return rng.pick(U32_EDGES);
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return rng.pick(U32_EDGES) | 0;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return rng.pick([0, -1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, 1e300]);
  }
}

function enumFor(e: DescEnum, rng: Prng, realistic: boolean): number {
  const defined = e.values.map((v) => v.number);
  if (realistic)
    return rng.pick(defined.filter((n) => n !== 0).length > 0 ? defined.filter((n) => n !== 0) : defined);
  // proto3 enums are open: unknown numbers decode fine and must be refused by the handler.
  return rng.chance(0.8) ? rng.pick(defined) : rng.pick([-1, 4, 99, 0x7fffffff]);
}

function valueFor(field: DescField, rng: Prng, pool: IdPool, depth: number, realistic: boolean): unknown {
  switch (field.fieldKind) {
    case "scalar":
      return scalarFor(field, field.scalar, rng, pool, realistic);
    case "enum":
      return enumFor(field.enum, rng, realistic);
    case "message":
      return depth < 3 ? randomInit(field.message, rng, pool, depth + 1, realistic) : undefined;
    case "list": {
      const n = rng.range(0, 4);
      return Array.from({ length: n }, () => {
        if (field.listKind === "scalar") return scalarFor(field, field.scalar, rng, pool, realistic);
        if (field.listKind === "enum") return enumFor(field.enum, rng, realistic);
        return depth < 3 ? randomInit(field.message, rng, pool, depth + 1, realistic) : {};
      });
    }
    case "map":
      return {};
  }
}

/**
 * A random init object for schema: one member per oneof, each field set with probability 0.8, or
 * every field set to a realistic value (what a correct client sends) when realistic.
 */
export function randomInit(
  schema: DescMessage,
  rng: Prng,
  pool: IdPool,
  depth = 0,
  realistic = false,
): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  for (const m of schema.members) {
    if (m.kind === "oneof") {
      if (realistic || rng.chance(0.8)) {
        const f = rng.pick(m.fields);
        init[m.localName] = { case: f.localName, value: valueFor(f, rng, pool, depth, realistic) };
      }
    } else if (realistic || rng.chance(0.8)) {
      const v = valueFor(m, rng, pool, depth, realistic);
      if (v !== undefined) init[m.localName] = v;
    }
  }
  return init;
}

/**
 * randomInit encoded; falls back to the empty message if a value does not fit its field. A third
 * of the messages are realistic, so that the state they create (device files, mappings) is there
 * for the others to poke at.
 */
export function randomMessage(schema: DescMessage, rng: Prng, pool: IdPool): Buffer {
  const init = randomInit(schema, rng, pool, 0, rng.chance(1 / 3));
  try {
    return Buffer.from(toBinary(schema, create(schema, init as MessageInitShape<DescMessage>)));
  } catch {
    return Buffer.alloc(0);
  }
}
