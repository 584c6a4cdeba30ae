// validateStore on real files: what StateStore.open() or restoreState() would refuse is refused
// (damage, recorded mappings of a live process booking one page with two attributes), what they
// would accept passes, and nothing is written: the files are byte for byte as before.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { processStartTime } from "../identity/peer.js";
import type { MappingRec, StateRecord } from "./records.js";
import { StateError, StateStore } from "./store.js";
import { validateStore } from "./validate.js";

const root = mkdtempSync(join(tmpdir(), "vfio-validate-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const PAGE = 4096n;

function mapping(cookie: string, offset: number, effective: "UC" | "WC"): StateRecord {
  const m: MappingRec = {
    df: "1",
    cookie,
    region: 2,
    offset: String(offset),
    length: "8192",
    requested: effective,
    effective,
    fallbackReason: "",
    prot: "rw",
    kind: "memfd",
    state: "delivered",
    ticket: "",
    expiresAt: 0,
    rule: "r",
    requestId: "",
    createdAt: 1,
  };
  return { t: "map.create", m };
}

/** A store of this boot with one session of pid (this process: alive) holding the mappings. */
function seeded(pid: number, ...maps: StateRecord[]): string {
  const dir = join(root, `s${++n}`);
  const { store } = StateStore.open(dir, "boot1");
  store.append({ t: "run", run: 1, pid: 1, at: 0, bootId: "boot1" });
  store.append({
    t: "session.open",
    s: {
      id: "s1",
      tokenHash: "h",
      uid: 1000,
      gid: 1000,
      pid,
      startTime: pid === process.pid ? processStartTime(pid) : "1",
      cgroup: "/",
      groups: [],
      pidfdSource: "SO_PEERPIDFD",
      clientName: "t",
      openedAt: 1,
    },
  });
  store.append({
    t: "df.open",
    d: { id: "1", session: "s1", device: "sim0", layout: "legacy", openedAt: 1, requestId: "" },
  });
  for (const m of maps) store.append(m);
  store.close();
  return dir;
}

const snapshotOf = (dir: string) => readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), "utf8")]);

test("a sound store passes, and is not touched", () => {
  const dir = seeded(process.pid, mapping("1", 0, "WC"), mapping("2", 8192, "UC"), mapping("3", 0, "WC"));
  const before = snapshotOf(dir);
  assert.deepEqual(validateStore(dir, "boot1", PAGE), { sessions: 1, live: 1, mappings: 3 });
  assert.deepEqual(snapshotOf(dir), before);
});

test("a damaged line is refused with the file and what to do", () => {
  const dir = seeded(process.pid, mapping("1", 0, "WC"));
  const log = join(dir, "state.0.log");
  const text = readFileSync(log, "utf8");
  writeFileSync(log, text.replace('"sim0"', '"sim9"'));
  assert.throws(
    () => validateStore(dir, "boot1", PAGE),
    (e: unknown) => {
      assert.ok(e instanceof StateError);
      assert.match(e.message, /state\.0\.log is unusable: line 3: CRC-32/);
      return true;
    },
  );
});

test("one page booked UC and WC by a live process is refused, as restoreState() would", () => {
  const dir = seeded(process.pid, mapping("1", 0, "WC"), mapping("2", 4096, "UC"));
  assert.throws(() => validateStore(dir, "boot1", PAGE), /mapping 1\/2 conflicts with another recorded one/);
});

test("a dead process's bookings, another boot's store and no store at all do not stop a start", () => {
  // pid 2 with another start time: "gone", its mappings are released at start, not booked.
  assert.equal(validateStore(seeded(2, mapping("1", 0, "WC"), mapping("2", 0, "UC")), "boot1", PAGE).live, 0);
  assert.equal(validateStore(seeded(process.pid, mapping("1", 0, "WC")), "boot2", PAGE).sessions, 0);
  assert.deepEqual(validateStore(join(root, "none"), "boot1", PAGE), { sessions: 0, live: 0, mappings: 0 });
});
