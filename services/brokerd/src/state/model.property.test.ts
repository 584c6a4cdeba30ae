// StateModel and its encoding, property-tested: random histories of grant changes replay to the
// same state whether read straight from the log, from a snapshot taken at any point plus the rest
// of the log, or after an encode/decode round trip; damage to any line is detected.
import assert from "node:assert/strict";
import { test } from "node:test";
import { crc32 } from "node:zlib";
import fc from "fast-check";
import { StateModel } from "./model.js";
import {
  crcHex,
  decodeLog,
  decodeRecord,
  encodeRecord,
  encodeRecordsBytes,
  type MappingRec,
  RecordError,
  type StateRecord,
} from "./records.js";

type Op =
  | { op: "session" }
  | { op: "end"; pick: number }
  | { op: "open"; pick: number }
  | { op: "close"; pick: number }
  | { op: "map"; pick: number; attr: "UC" | "WC" }
  | { op: "deliver"; pick: number }
  | { op: "refs"; pick: number; refs: number }
  | { op: "release"; pick: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.constant({ op: "session" as const }),
  fc.record({ op: fc.constant("end" as const), pick: fc.nat() }),
  fc.record({ op: fc.constant("open" as const), pick: fc.nat() }),
  fc.record({ op: fc.constant("close" as const), pick: fc.nat() }),
  fc.record({
    op: fc.constant("map" as const),
    pick: fc.nat(),
    attr: fc.constantFrom("UC" as const, "WC" as const),
  }),
  fc.record({ op: fc.constant("deliver" as const), pick: fc.nat() }),
  fc.record({ op: fc.constant("refs" as const), pick: fc.nat(), refs: fc.integer({ min: 1, max: 5 }) }),
  fc.record({ op: fc.constant("release" as const), pick: fc.nat() }),
);

/** Turns random ops into a valid record history (what brokerd would write). */
function history(ops: Op[]): StateRecord[] {
  const m = new StateModel();
  const out: StateRecord[] = [{ t: "run", run: 1, pid: 1, at: 0, bootId: "b" }];
  let sid = 0;
  let dfid = 1;
  let cookie = 1;
  const pick = <T>(xs: T[], n: number) => (xs.length ? xs[n % xs.length] : undefined);
  const emit = (r: StateRecord) => {
    m.apply(r);
    out.push(r);
  };
  for (const o of ops) {
    const sessions = [...m.sessions.keys()];
    const dfs = [...m.deviceFiles.keys()];
    const maps = [...m.mappings.values()].flatMap((x) => [...x.values()]);
    switch (o.op) {
      case "session":
        emit({
          t: "session.open",
          s: {
            id: `s${++sid}`,
            tokenHash: "h",
            uid: 1,
            gid: 1,
            pid: sid,
            startTime: "9",
            cgroup: "/",
            groups: [],
            pidfdSource: "SO_PEERPIDFD",
            clientName: "c",
            openedAt: 0,
          },
        });
        break;
      case "end": {
        const s = pick(sessions, o.pick);
        if (s) emit({ t: "session.end", id: s });
        break;
      }
      case "open": {
        const s = pick(sessions, o.pick);
        if (s)
          emit({
            t: "df.open",
            d: {
              id: String(dfid++),
              session: s,
              device: "sim0",
              layout: "compact",
              openedAt: 0,
              requestId: "",
            },
          });
        break;
      }
      case "close": {
        const d = pick(dfs, o.pick);
        if (d) emit({ t: "df.close", id: d });
        break;
      }
      case "map": {
        const d = pick(dfs, o.pick);
        if (!d) break;
        const rec: MappingRec = {
          df: d,
          cookie: String(cookie++ * 4096),
          region: 2,
          offset: "0",
          length: "4096",
          requested: o.attr,
          effective: o.attr,
          fallbackReason: "",
          prot: "rw",
          kind: "memfd",
          state: "pending",
          ticket: "t",
          expiresAt: 1,
          rule: "r",
          requestId: "",
          createdAt: 0,
        };
        emit({ t: "map.create", m: rec });
        break;
      }
      case "deliver": {
        const x = pick(maps, o.pick);
        if (x) emit({ t: "map.deliver", df: x.df, cookie: x.cookie });
        break;
      }
      case "refs": {
        const x = pick(maps, o.pick);
        if (x)
          emit({
            t: "map.refs",
            df: x.df,
            cookie: x.cookie,
            refs: o.refs,
            ticket: `t${o.refs}`,
            expiresAt: 2,
          });
        break;
      }
      case "release": {
        const x = pick(maps, o.pick);
        if (x) emit({ t: "map.release", df: x.df, cookie: x.cookie });
        break;
      }
    }
  }
  return out;
}

const replay = (rs: StateRecord[], from = new StateModel()) => {
  for (const r of rs) from.apply(r);
  return from;
};

test("snapshot at any point + the rest of the log = the whole log", () => {
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 120 }), fc.nat(), (ops, cut) => {
      const rs = history(ops);
      const whole = replay(rs).snapshot();
      const at = cut % (rs.length + 1);
      const snap = JSON.parse(JSON.stringify(replay(rs.slice(0, at)).snapshot()));
      const resumed = replay(rs.slice(at), StateModel.fromSnapshot(snap)).snapshot();
      assert.deepEqual(resumed, whole);
    }),
  );
});

test("records round-trip through their encoding; ids never go backwards", () => {
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 80 }), (ops) => {
      const rs = history(ops);
      const text = rs.map(encodeRecord).join("");
      const back = decodeLog(text);
      assert.equal(back.torn, "");
      assert.deepEqual(back.records, rs);
      const m = replay(back.records);
      for (const id of m.deviceFiles.keys()) assert.ok(BigInt(id) < m.nextDeviceFileId);
    }),
  );
});

test("the store's byte encoding is encodeRecord's, byte for byte (non-ASCII text included)", () => {
  fc.assert(
    fc.property(fc.array(opArb, { maxLength: 40 }), fc.string({ unit: "grapheme" }), (ops, text) => {
      const rs: StateRecord[] = [...history(ops), { t: "session.end", id: text }];
      const bytes = encodeRecordsBytes(rs);
      assert.deepEqual(bytes, Buffer.from(rs.map(encodeRecord).join("")));
      assert.deepEqual(decodeLog(bytes.toString()).records, rs);
      // The CRC is over the UTF-8 bytes (zlib's crc32 given the string itself).
      assert.equal(crcHex(text), crc32(Buffer.from(text)).toString(16).padStart(8, "0"));
    }),
  );
});

test("any changed byte in a record is detected", () => {
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 30 }), fc.nat(), fc.nat(255), (ops, at, byte) => {
      const line = encodeRecord(history(ops).at(-1)!).slice(0, -1);
      const i = at % line.length;
      if (line.charCodeAt(i) === byte) return;
      const bad = line.slice(0, i) + String.fromCharCode(byte) + line.slice(i + 1);
      assert.throws(() => decodeRecord(bad), RecordError);
    }),
  );
});

test("a last line without its newline is torn, not damage; a bad line before it is damage", () => {
  const rs = history([{ op: "session" }, { op: "open", pick: 0 }]);
  const text = rs.map(encodeRecord).join("");
  const cut = text.slice(0, -7);
  const r = decodeLog(cut);
  assert.equal(r.records.length, rs.length - 1);
  assert.ok(r.torn.length > 0);
  const lines = text.split("\n");
  lines[1] = lines[1]!.replace('"s1"', '"s2"');
  assert.throws(() => decodeLog(lines.join("\n")), /line 2: CRC-32 mismatch/);
});

test("a record naming what was never created is damage", () => {
  const m = new StateModel();
  assert.throws(
    () =>
      m.apply({
        t: "df.open",
        d: { id: "1", session: "nobody", device: "sim0", layout: "compact", openedAt: 0, requestId: "" },
      }),
    /unknown session nobody/,
  );
});
