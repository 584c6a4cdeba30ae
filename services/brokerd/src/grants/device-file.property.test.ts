// DeviceFile's sharing index, property-tested: after any sequence of mappings added and removed,
// sharedMapping(range, attribute, prot) is exactly what a scan of the live mappings finds (the
// first one made with that region, offset, length, requested attribute and prot), so a
// CreateMapping shares a cookie if and only if a matching live mapping exists.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Attribute, Backing, DeviceInfo, Prot, RegionInfo } from "../devices/backend.js";
import { DeviceFile, type Mapping } from "./device-file.js";

const region = (index: number): RegionInfo => ({
  index,
  name: `BAR${index}`,
  size: 1n << 20n,
  readable: true,
  writable: true,
  mappable: true,
  prefetchable: true,
  attributes: ["UC", "WC"],
  sparseAreas: [],
});
const device: DeviceInfo = {
  id: "sim0",
  backend: "sim",
  vendorId: 0,
  deviceId: 0,
  description: "",
  regions: [region(0), region(2)],
  mode: "sysfs-wc",
  modeNotes: [],
};
const backing = {} as Backing;

type Op =
  | { op: "add"; region: 0 | 2; page: number; pages: number; attr: Attribute; prot: Prot }
  | { op: "remove"; pick: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant("add" as const),
    region: fc.constantFrom(0 as const, 2 as const),
    page: fc.nat({ max: 3 }),
    pages: fc.integer({ min: 1, max: 2 }),
    attr: fc.constantFrom<Attribute>("UC", "WC"),
    prot: fc.constantFrom<Prot>("r", "rw"),
  }),
  fc.record({ op: fc.constant("remove" as const), pick: fc.nat() }),
);

test("sharedMapping finds exactly the first live mapping of the same range, attribute and prot", () => {
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 60 }), (ops) => {
      const df = new DeviceFile(1n, "s1", device, "compact", 4096n);
      const live: Mapping[] = [];
      const check = () => {
        for (const r of [0, 2])
          for (let page = 0; page < 4; page++)
            for (const pages of [1, 2])
              for (const attr of ["UC", "WC"] as const)
                for (const prot of ["r", "rw"] as const) {
                  const offset = BigInt(page) * 4096n;
                  const length = BigInt(pages) * 4096n;
                  const want = live.find(
                    (m) =>
                      m.region.index === r &&
                      m.regionOffset === offset &&
                      m.length === length &&
                      m.requestedAttribute === attr &&
                      m.prot === prot,
                  );
                  assert.equal(df.sharedMapping(r, offset, length, attr, prot), want);
                }
      };
      for (const o of ops) {
        if (o.op === "add") {
          const length = BigInt(o.pages) * 4096n;
          const m = df.addMapping(
            (cookie) =>
              ({
                cookie,
                deviceFile: df,
                region: region(o.region),
                regionOffset: BigInt(o.page) * 4096n,
                length,
                requestedAttribute: o.attr,
                effectiveAttribute: o.attr,
                prot: o.prot,
                backing,
                refs: 1,
              }) as Mapping,
            length,
          );
          live.push(m);
        } else if (live.length > 0) {
          const [m] = live.splice(o.pick % live.length, 1);
          df.removeMapping(m!);
        }
        check();
      }
    }),
  );
});
