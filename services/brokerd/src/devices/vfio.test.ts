// Tests for the pure part of the vfio backend (bar-families.ts): backing families per BAR (never VFIO and sysfs on one BAR).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { BrokerError } from "../errors.js";
import { type BackingFamily, BarFamilies } from "./bar-families.js";

const isPrecondition = (re: RegExp) => (e: unknown) =>
  e instanceof BrokerError &&
  e.code === "FAILED_PRECONDITION" &&
  e.reason === "backing_family_conflict" &&
  re.test(e.message);

test("the first live mapping of a BAR fixes its family until all its mappings are released", () => {
  const f = new BarFamilies("0000:00:01.0");
  f.acquire(2, "vfio");
  f.acquire(2, "vfio");
  f.acquire(0, "sysfs");
  assert.throws(
    () => f.acquire(2, "sysfs"),
    isPrecondition(/BAR2 is mapped through VFIO by 2 live mapping\(s\).*SIGBUS/),
  );
  assert.throws(() => f.check(0, "vfio"), isPrecondition(/BAR0 is mapped through sysfs by 1 live mapping/));
  f.release(2, "vfio");
  assert.throws(() => f.check(2, "sysfs"));
  f.release(2, "sysfs"); // the wrong family releases nothing
  assert.equal(f.refs(2), 1);
  f.release(2, "vfio");
  assert.equal(f.family(2), undefined);
  f.acquire(2, "sysfs");
  assert.equal(f.family(2), "sysfs");
});

test("property: a BAR never holds two families, and refs equal acquires minus releases", () => {
  const op = fc.record({
    bar: fc.integer({ min: 0, max: 2 }),
    family: fc.constantFrom<BackingFamily>("vfio", "sysfs"),
    acquire: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const f = new BarFamilies("d");
      const model = new Map<number, { family: BackingFamily; refs: number }>();
      for (const o of ops) {
        const m = model.get(o.bar);
        if (o.acquire) {
          const conflict = m !== undefined && m.family !== o.family;
          let threw = false;
          try {
            f.acquire(o.bar, o.family);
          } catch {
            threw = true;
          }
          assert.equal(threw, conflict);
          if (!conflict) model.set(o.bar, { family: o.family, refs: (m?.refs ?? 0) + 1 });
        } else {
          f.release(o.bar, o.family);
          if (m && m.family === o.family) {
            if (m.refs === 1) model.delete(o.bar);
            else m.refs--;
          }
        }
        for (let b = 0; b <= 2; b++) {
          assert.equal(f.family(b), model.get(b)?.family);
          assert.equal(f.refs(b), model.get(b)?.refs ?? 0);
        }
      }
    }),
  );
});
