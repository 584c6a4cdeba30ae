// SmallMap against Map (the model): whatever sets, deletes and clears come in whatever order, it
// answers get, has and size as a Map does and iterates its entries, keys and values in the same
// (insertion) order, through its first entry held in fields and after it made a Map of its own.
// Session.remember's bound relies on that order (the oldest request id is the first key).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { SmallMap } from "./small-map.js";

const key = fc.constantFrom("a", "b", "c", "d", "");
const op = fc.oneof(
  fc.record({ kind: fc.constant("set" as const), k: key, v: fc.nat(99) }),
  fc.record({ kind: fc.constant("delete" as const), k: key }),
  fc.record({ kind: fc.constant("clear" as const) }),
);

test("property: SmallMap behaves as a Map, order included (model)", () => {
  fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      const small = new SmallMap<string, number>();
      const model = new Map<string, number>();
      for (const o of ops) {
        if (o.kind === "set") assert.equal(small.set(o.k, o.v), small);
        if (o.kind === "set") model.set(o.k, o.v);
        if (o.kind === "delete") assert.equal(small.delete(o.k), model.delete(o.k));
        if (o.kind === "clear") {
          small.clear();
          model.clear();
        }
        assert.equal(small.size, model.size);
        for (const k of ["a", "b", "c", "d", "", "x"]) {
          assert.equal(small.get(k), model.get(k));
          assert.equal(small.has(k), model.has(k));
        }
        assert.deepEqual([...small], [...model]);
        assert.deepEqual([...small.keys()], [...model.keys()]);
        assert.deepEqual([...small.values()], [...model.values()]);
        const seen: [string, number][] = [];
        small.forEach((v, k) => {
          seen.push([k, v]);
        });
        assert.deepEqual(seen, [...model.entries()]);
      }
    }),
  );
});
