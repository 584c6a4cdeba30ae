// Revocation's bookings, property-tested: the Broker's rules (grants/holds.ts staysBooked, the
// HoldBook's conflict check, the AttributeMap) replayed over random grants, deliveries, releases,
// revocations for every reason, connection ends and process exits, against a ground truth of what
// each holder really still maps: a holder ignores every revocation and keeps its mmap until it
// releases the mapping or exits. After every step, no page is mapped with two attributes by
// holders that have not released or exited, and every page such a holder maps is booked in the
// AttributeMap with its attribute (so no grant of another attribute can pass).
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Attribute } from "../devices/backend.js";
import { BrokerError } from "../errors.js";
import { AttributeMap } from "./attribute-map.js";
import { type Hold, HoldBook, staysBooked } from "./holds.js";

const PAGE = 4096n;
const REVOKE_REASONS = ["operator", "policy", "device-drain", "device-gone", "shutdown", "revoked", "idle"];

interface Live {
  id: number;
  holder: number;
  region: number;
  offset: bigint;
  length: bigint;
  attribute: Attribute;
  delivered: boolean;
}

/** What a holder process really maps (brokerd cannot see it). */
interface MMap {
  mapping: number;
  holder: number;
  region: number;
  offset: bigint;
  length: bigint;
  attribute: Attribute;
}

type Op =
  | {
      op: "grant";
      holder: number;
      region: number;
      page: number;
      pages: number;
      attr: Attribute;
      deliver: boolean;
    }
  | { op: "deliver"; pick: number }
  | { op: "release"; pick: number }
  | { op: "revoke"; pick: number; reason: string }
  | { op: "releaseHold"; pick: number }
  | { op: "disconnect"; holder: number }
  | { op: "exit"; holder: number };

const holderArb = fc.nat({ max: 3 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant("grant" as const),
      holder: holderArb,
      region: fc.constantFrom(0, 2),
      page: fc.nat({ max: 7 }),
      pages: fc.integer({ min: 1, max: 3 }),
      attr: fc.constantFrom<Attribute>("UC", "WC"),
      deliver: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("deliver" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("release" as const), pick: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("revoke" as const),
      pick: fc.nat(),
      reason: fc.constantFrom(...REVOKE_REASONS),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("releaseHold" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("disconnect" as const), holder: holderArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("exit" as const), holder: holderArb }) },
);

class Model {
  readonly attrs = new AttributeMap("sim0", PAGE);
  readonly holds = new HoldBook();
  readonly live = new Map<number, Live>();
  mmaps: MMap[] = [];
  /** Holder "n" is process generation gen[n]: an exit makes the next holder n a new process. */
  readonly gen = [0, 0, 0, 0];
  private nextId = 1;
  granted = 0;
  refused = 0;
  held = 0;

  private pid(holder: number): number {
    return holder * 1000 + this.gen[holder]!;
  }

  private pick<T>(xs: T[], n: number): T | undefined {
    return xs.length === 0 ? undefined : xs[n % xs.length];
  }

  grant(o: Extract<Op, { op: "grant" }>): void {
    const offset = BigInt(o.page) * PAGE;
    const length = BigInt(o.pages) * PAGE;
    if (this.holds.conflict("sim0", o.region, offset, length, o.attr, PAGE)) {
      this.refused++;
      return;
    }
    try {
      this.attrs.check(o.region, `BAR${o.region}`, offset, length, o.attr);
    } catch (e) {
      assert.ok(e instanceof BrokerError);
      this.refused++;
      return;
    }
    this.attrs.acquire(o.region, offset, length, o.attr);
    const m: Live = {
      id: this.nextId++,
      holder: o.holder,
      region: o.region,
      offset,
      length,
      attribute: o.attr,
      delivered: false,
    };
    this.live.set(m.id, m);
    this.granted++;
    if (o.deliver) this.deliver(m);
  }

  deliver(m: Live): void {
    if (m.delivered) return;
    m.delivered = true;
    this.mmaps.push({
      mapping: m.id,
      holder: m.holder,
      region: m.region,
      offset: m.offset,
      length: m.length,
      attribute: m.attribute,
    });
  }

  /** A live mapping leaves its device file for reason (the Broker's dropMapping). */
  drop(m: Live, reason: string): void {
    this.live.delete(m.id);
    // The holder process is alive in this model until "exit" (which drops with process-exit).
    if (staysBooked(m.delivered, reason, () => reason !== "process-exit")) {
      const h: Hold = {
        id: `h${m.id}`,
        pid: this.pid(m.holder),
        startTime: "1",
        uid: 1000 + m.holder,
        sessionId: `s${m.holder}`,
        deviceFileId: 1n,
        cookie: BigInt(m.id),
        deviceId: "sim0",
        regionIndex: m.region,
        regionName: `BAR${m.region}`,
        offset: m.offset,
        length: m.length,
        attribute: m.attribute,
        prot: "rw",
        kind: "memfd",
        refs: 1,
        quotaKeys: [],
        rule: "r",
        reason,
        since: 0,
        enforceAt: 0,
        enforceBy: "",
        enforced: false,
      };
      this.holds.add(h);
      this.held++;
      return;
    }
    this.attrs.release(m.region, m.offset, m.length);
    // Only the holder's own release or exit ends a mapping without a hold: it has unmapped.
    this.mmaps = this.mmaps.filter((x) => x.mapping !== m.id);
  }

  unhold(h: Hold): void {
    assert.ok(this.holds.remove(h));
    this.attrs.release(h.regionIndex, h.offset, h.length);
    this.mmaps = this.mmaps.filter((x) => `h${x.mapping}` !== h.id);
  }

  apply(o: Op): void {
    switch (o.op) {
      case "grant":
        this.grant(o);
        return;
      case "deliver": {
        const m = this.pick([...this.live.values()], o.pick);
        if (m) this.deliver(m);
        return;
      }
      case "release": {
        const m = this.pick([...this.live.values()], o.pick);
        if (m) this.drop(m, "client");
        return;
      }
      case "revoke": {
        const m = this.pick([...this.live.values()], o.pick);
        if (m) this.drop(m, o.reason);
        return;
      }
      case "releaseHold": {
        const h = this.pick([...this.holds.all()], o.pick);
        if (h) this.unhold(h);
        return;
      }
      case "disconnect":
        for (const m of [...this.live.values()]) if (m.holder === o.holder) this.drop(m, "disconnect");
        return;
      case "exit":
        for (const m of [...this.live.values()]) if (m.holder === o.holder) this.drop(m, "process-exit");
        for (const h of this.holds.ofHolder(this.pid(o.holder), "1")) this.unhold(h);
        assert.equal(
          this.mmaps.filter((x) => x.holder === o.holder).length,
          0,
          "an exited holder maps nothing",
        );
        this.gen[o.holder]!++;
        return;
    }
  }

  check(): void {
    const other = (a: Attribute): Attribute => (a === "UC" ? "WC" : "UC");
    for (const x of this.mmaps) {
      for (let p = x.offset; p < x.offset + x.length; p += PAGE) {
        // Every page a holder still maps is booked with its attribute: another is refused.
        assert.throws(
          () => this.attrs.check(x.region, `BAR${x.region}`, p, PAGE, other(x.attribute)),
          BrokerError,
          `page ${p} of BAR${x.region} is mapped ${x.attribute} by holder ${x.holder} but not booked`,
        );
        for (const y of this.mmaps)
          if (y.region === x.region && y.offset <= p && p < y.offset + y.length)
            assert.equal(y.attribute, x.attribute, `page ${p} of BAR${x.region} is mapped UC and WC at once`);
      }
    }
    assert.equal(
      this.holds.bytes,
      [...this.holds.all()].reduce((n, h) => n + h.length, 0n),
    );
  }
}

test("no page is ever mapped with two attributes while a holder that has not released or exited maps it", () => {
  let totals = { granted: 0, refused: 0, held: 0 };
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 80 }), (ops) => {
      const m = new Model();
      for (const o of ops) {
        m.apply(o);
        m.check();
      }
      totals = {
        granted: totals.granted + m.granted,
        refused: totals.refused + m.refused,
        held: totals.held + m.held,
      };
    }),
    { numRuns: 400 },
  );
  // The runs exercised the interesting cases.
  assert.ok(totals.held > 0 && totals.refused > 0 && totals.granted > 0, JSON.stringify(totals));
});
