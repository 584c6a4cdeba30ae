// maple/maple.property.test.ts — MapleTree against the sorted-array ReferenceMaple on random command
// sequences: every step compares the result and the full contents, and runs validate().

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { MAX_INDEX } from "./key.js";
import { ReferenceMaple } from "./reference.js";
import { MapleTree, type MapleTreeOptions } from "./tree.js";

const P53 = 1n << 53n;
const P32 = 1n << 32n;
const BOUNDARIES = [0n, P32, P53 - 1n, P53, P53 + 1n, 1n << 63n, MAX_INDEX];

const clamp = (k: bigint) => (k < 0n ? 0n : k > MAX_INDEX ? MAX_INDEX : k);

/** Keys near 0 and near the 2^32 / 2^53 / 2^63 / 2^64-1 edges, where word splits and doubles break. */
const edgeKey = fc
  .tuple(fc.constantFrom(...BOUNDARIES), fc.integer({ min: -4, max: 4 }))
  .map(([b, d]) => clamp(b + BigInt(d)));

type Cmd =
  | { op: "store"; start: bigint; last: bigint; clear: boolean }
  | { op: "insert"; start: bigint; last: bigint }
  | { op: "erase"; at: bigint }
  | { op: "alloc"; reverse: boolean; size: bigint; align: bigint; min: bigint; max: bigint; take: boolean }
  | { op: "load" | "next" | "prev"; at: bigint }
  | { op: "find" | "collect"; start: bigint; last: bigint };

function commands(key: fc.Arbitrary<bigint>, maxLen: bigint): fc.Arbitrary<Cmd[]> {
  const range = fc.oneof(
    fc.tuple(key, fc.bigInt(0n, maxLen)).map(([s, len]) => [s, clamp(s + len)] as const),
    fc.tuple(key, key).map(([a, b]) => (a <= b ? ([a, b] as const) : ([b, a] as const))),
  );
  const cmd: fc.Arbitrary<Cmd> = fc.oneof(
    {
      weight: 4,
      arbitrary: fc
        .tuple(range, fc.boolean())
        .map(([[start, last], c]) => ({ op: "store" as const, start, last, clear: c && start % 4n === 0n })),
    },
    { weight: 4, arbitrary: range.map(([start, last]) => ({ op: "insert" as const, start, last })) },
    { weight: 3, arbitrary: key.map((at) => ({ op: "erase" as const, at })) },
    {
      weight: 3,
      arbitrary: fc
        .record({
          reverse: fc.boolean(),
          size: fc.oneof(fc.bigInt(1n, maxLen + 1n), fc.constantFrom(1n, P53, P53 + 1n, 1n << 63n)),
          alignLog: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constantFrom(40, 53, 63)),
          window: range,
          take: fc.boolean(),
        })
        .map(({ reverse, size, alignLog, window, take }) => ({
          op: "alloc" as const,
          reverse,
          size,
          align: 1n << BigInt(alignLog),
          min: window[0],
          max: window[1],
          take,
        })),
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.constantFrom("load" as const, "next" as const, "prev" as const), key)
        .map(([op, at]) => ({ op, at })),
    },
    { weight: 1, arbitrary: range.map(([start, last]) => ({ op: "find" as const, start, last })) },
    { weight: 1, arbitrary: range.map(([start, last]) => ({ op: "collect" as const, start, last })) },
  );
  return fc.array(cmd, { minLength: 1, maxLength: 80, size: "max" });
}

interface Api {
  load(i: bigint): unknown;
  store(s: bigint, l: bigint, e: number | undefined): void;
  insert(s: bigint, l: bigint, e: number): void;
  erase(i: bigint): unknown;
  find(s: bigint, l: bigint): unknown;
  collect(s: bigint, l: bigint): unknown;
  next(i: bigint): unknown;
  prev(i: bigint): unknown;
  allocRange(size: bigint, o: { align: bigint; min: bigint; max: bigint }): bigint;
  allocRangeReverse(size: bigint, o: { align: bigint; min: bigint; max: bigint }): bigint;
}

function apply(t: Api, c: Cmd, value: number): unknown {
  try {
    switch (c.op) {
      case "store":
        return t.store(c.start, c.last, c.clear ? undefined : value);
      case "insert":
        return t.insert(c.start, c.last, value);
      case "erase":
        return t.erase(c.at);
      case "load":
        return t.load(c.at);
      case "next":
        return t.next(c.at);
      case "prev":
        return t.prev(c.at);
      case "find":
        return t.find(c.start, c.last);
      case "collect":
        return t.collect(c.start, c.last);
      case "alloc": {
        const o = { align: c.align, min: c.min, max: c.max };
        const start = c.reverse ? t.allocRangeReverse(c.size, o) : t.allocRange(c.size, o);
        if (c.take) t.insert(start, start + c.size - 1n, value);
        return start;
      }
    }
  } catch (e) {
    return { threw: (e as Error).name, message: (e as Error).message };
  }
}

function run(cmds: Cmd[], options: MapleTreeOptions): void {
  const tree = new MapleTree<number>(options);
  const model = new ReferenceMaple<number>();
  cmds.forEach((c, step) => {
    const got = apply(tree, c, step);
    const want = apply(model, c, step);
    assert.deepEqual(got, want, `step ${step} ${fmt(c)}`);
    tree.validate();
    assert.equal(tree.size, model.size);
    assert.deepEqual([...tree], model.entries(), `contents after step ${step} ${fmt(c)}`);
  });
  for (const e of model.entries()) {
    tree.erase(e.start);
    tree.validate();
  }
  assert.equal(tree.depth, 0);
}

const fmt = (c: Cmd) => JSON.stringify(c, (_k, v) => (typeof v === "bigint" ? v.toString() : v));

const SMALL_NODES = { leafSlots: 4, branchSlots: 4 };
const ODD_NODES = { leafSlots: 5, branchSlots: 7 };

test("matches the model on small ranges (4-slot nodes: deep trees, many splits and merges)", () => {
  fc.assert(
    fc.property(commands(fc.bigInt(0n, 96n), 6n), (cmds) => run(cmds, SMALL_NODES)),
    { numRuns: 4000 },
  );
});

test("matches the model on small ranges (5/7-slot nodes)", () => {
  fc.assert(
    fc.property(commands(fc.bigInt(0n, 200n), 10n), (cmds) => run(cmds, ODD_NODES)),
    { numRuns: 2000 },
  );
});

test("matches the model at the 2^32, 2^53 and 2^64-1 boundaries", () => {
  fc.assert(
    fc.property(commands(fc.oneof(edgeKey, fc.bigInt(0n, 16n)), 6n), (cmds) => run(cmds, SMALL_NODES)),
    { numRuns: 4000 },
  );
});

test("matches the model with default (32-slot) nodes", () => {
  fc.assert(
    fc.property(commands(fc.oneof(fc.bigInt(0n, 600n), edgeKey), 12n), (cmds) => run(cmds, {})),
    { numRuns: 1000 },
  );
});

test("matches the model with the kernel's node sizes (16-slot range, 10-slot alloc)", () => {
  fc.assert(
    fc.property(commands(fc.oneof(fc.bigInt(0n, 400n), edgeKey), 8n), (cmds) =>
      run(cmds, { leafSlots: 16, branchSlots: 10 }),
    ),
    { numRuns: 1000 },
  );
});

test("long sequences: allocRange always equals the model's lowest fitting gap", () => {
  // Many allocations and erases on one tree, so the gap summaries are exercised at depth 3+.
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          size: fc.bigInt(1n, 40n),
          alignLog: fc.integer({ min: 0, max: 5 }),
          reverse: fc.boolean(),
          eraseAt: fc.option(fc.bigInt(0n, 3000n), { freq: 2 }),
        }),
        { minLength: 50, maxLength: 400, size: "max" },
      ),
      (ops) => {
        const tree = new MapleTree<number>(SMALL_NODES);
        const model = new ReferenceMaple<number>();
        ops.forEach((o, i) => {
          if (o.eraseAt !== null) {
            assert.equal(tree.erase(o.eraseAt), model.erase(o.eraseAt));
          } else {
            const opts = { align: 1n << BigInt(o.alignLog), min: 0n, max: 4095n, reverse: o.reverse };
            let want: bigint | string;
            try {
              want = o.reverse ? model.allocRangeReverse(o.size, opts) : model.allocRange(o.size, opts);
              model.insert(want, want + o.size - 1n, i);
            } catch (e) {
              want = (e as Error).message;
            }
            let got: bigint | string;
            try {
              got = tree.allocate(o.size, i, opts);
            } catch (e) {
              got = (e as Error).message;
            }
            assert.equal(got, want);
          }
          tree.validate();
        });
        assert.deepEqual([...tree], model.entries());
      },
    ),
    { numRuns: 400 },
  );
});
