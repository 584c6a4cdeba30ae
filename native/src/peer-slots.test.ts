// PeerSlots against a model: no uid over perUid, the unknown bucket over its cap, or all over
// total, whatever the order of takes and gives; a refused take changes nothing; and an empty
// book holds no entries.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { type PeerKey, PeerSlots } from "./peer-slots.js";

test("PeerSlots: caps per uid, for unknown peers and in all hold under any sequence", () => {
  fc.assert(
    fc.property(
      fc.record({
        perUid: fc.integer({ min: 1, max: 5 }),
        unknown: fc.integer({ min: 0, max: 3 }),
        total: fc.integer({ min: 1, max: 12 }),
      }),
      fc.array(fc.tuple(fc.constantFrom<PeerKey>(0, 1000, 65534, 60001, "unknown"), fc.boolean()), {
        maxLength: 200,
      }),
      (limits, ops) => {
        const s = new PeerSlots(limits);
        const held: PeerKey[] = [];
        for (const [key, give] of ops) {
          if (give) {
            const i = held.indexOf(key);
            if (i >= 0) {
              held.splice(i, 1);
              s.give(key);
            }
            continue;
          }
          const mine = held.filter((k) => k === key).length;
          const cap = key === "unknown" ? limits.unknown : limits.perUid;
          const fits = held.length < limits.total && mine < cap;
          assert.equal(s.take(key), fits);
          if (fits) held.push(key);
          assert.equal(s.total, held.length);
          assert.equal(s.held(key), held.filter((k) => k === key).length);
        }
        for (const k of [...held]) s.give(k);
        assert.equal(s.total, 0);
        assert.equal(s.peers, 0);
      },
    ),
  );
});
