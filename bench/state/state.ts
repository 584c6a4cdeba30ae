// Benchmark: what the state store costs a grant. One grant writes three records over its life
// (map.create before the CreateMapping reply, map.deliver before the fd is sent, map.release).
// Measured on the default state directory's filesystem (tmpfs under /run, or /dev/shm) and on disk
// (os.tmpdir()), in the same run:
//   baseline  a bare write(2) of the same bytes to an O_APPEND file (the floor of any log)
//   store     StateStore.append: encode + CRC-32 + write(2) + apply to the model (+ compaction)
//   sqlite    (only if VFIO_BENCH_SQLITE names a better-sqlite3 v12 install) one INSERT/UPDATE/DELETE
//             per record in autocommit, WAL, synchronous=NORMAL and =OFF (no fsync either way
//             for =OFF; NORMAL fsyncs the WAL at checkpoints)
// Usage: node bench/dist/state/state.js [grants]   (default 20000)
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeRecord, type MappingRec, type StateRecord } from "@vfio-broker/brokerd/state/records";
import { StateStore } from "@vfio-broker/brokerd/state/store";

const N = Number(process.argv[2] ?? 20_000);

function grantRecords(i: number): StateRecord[] {
  const m: MappingRec = {
    df: "7",
    cookie: String(0x1000000 + i * 4096),
    region: 2,
    offset: String((i % 4096) * 4096),
    length: "4096",
    requested: "WC",
    effective: "WC",
    fallbackReason: "",
    prot: "rw",
    kind: "memfd",
    state: "pending",
    ticket: "0123456789abcdef0123456789abcdef",
    expiresAt: 1_800_000_000_000,
    rule: "sim-any-local",
    requestId: "6f1c2f0e-4f3a-4a55-9d7e-2b8f0c1d2e3f",
    createdAt: 1_800_000_000_000,
  };
  return [
    { t: "map.create", m },
    { t: "map.deliver", df: m.df, cookie: m.cookie },
    { t: "map.release", df: m.df, cookie: m.cookie },
  ];
}

function usPerGrant(label: string, fn: (i: number) => void): number {
  for (let i = 0; i < 500; i++) fn(i); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 500; i < N + 500; i++) fn(i);
  const us = Number(process.hrtime.bigint() - t0) / 1000 / N;
  console.log(`  ${label.padEnd(34)} ${us.toFixed(2).padStart(8)} µs/grant`);
  return us;
}

function setup(dir: string): StateStore {
  const { store } = StateStore.open(dir, "bench");
  store.append({ t: "run", run: 1, pid: process.pid, at: Date.now(), bootId: "bench" });
  store.append({
    t: "session.open",
    s: {
      id: "s",
      tokenHash: "h",
      uid: 0,
      gid: 0,
      pid: process.pid,
      startTime: "1",
      cgroup: "/",
      groups: [],
      pidfdSource: "SO_PEERPIDFD",
      clientName: "bench",
      openedAt: 0,
    },
  });
  store.append({
    t: "df.open",
    d: { id: "7", session: "s", device: "sim0", layout: "compact", openedAt: 0, requestId: "" },
  });
  return store;
}

function sqlite(dir: string, sync: "NORMAL" | "OFF"): ((i: number) => void) | undefined {
  const path = process.env.VFIO_BENCH_SQLITE;
  if (!path) return undefined;
  const Database = createRequire(import.meta.url)(path) as new (
    f: string,
  ) => {
    pragma(s: string): unknown;
    exec(s: string): void;
    prepare(s: string): { run(...a: unknown[]): unknown };
  };
  const db = new Database(join(dir, `grants-${sync}.db`));
  db.pragma("journal_mode = WAL");
  db.pragma(`synchronous = ${sync}`);
  db.exec("CREATE TABLE mappings (df TEXT, cookie TEXT, state TEXT, rec TEXT, PRIMARY KEY (df, cookie))");
  const ins = db.prepare("INSERT INTO mappings VALUES (?, ?, 'pending', ?)");
  const upd = db.prepare("UPDATE mappings SET state = 'delivered' WHERE df = ? AND cookie = ?");
  const del = db.prepare("DELETE FROM mappings WHERE df = ? AND cookie = ?");
  return (i) => {
    const [c] = grantRecords(i) as [Extract<StateRecord, { t: "map.create" }>];
    ins.run(c.m.df, c.m.cookie, JSON.stringify(c.m));
    upd.run(c.m.df, c.m.cookie);
    del.run(c.m.df, c.m.cookie);
  };
}

function run(where: string, base: string): void {
  const dir = mkdtempSync(join(base, "vfio-bench-state-"));
  try {
    console.log(`\n${where} (${dir})`);
    const lines = Array.from({ length: 4096 }, (_, i) =>
      grantRecords(i).map((r) => Buffer.from(encodeRecord(r))),
    );
    const fd = openSync(join(dir, "floor.log"), "a");
    const floor = usPerGrant("baseline: 3 bare write(2)s", (i) => {
      for (const b of lines[i % 4096]!) writeSync(fd, b);
    });
    closeSync(fd);
    const store = setup(join(dir, "store"));
    const st = usPerGrant("StateStore.append x3", (i) => {
      for (const r of grantRecords(i)) store.append(r);
    });
    console.log(
      `  ratio store/baseline ${(st / floor).toFixed(2)}x; ${store.stats.compactions} compactions, ` +
        `${(store.stats.bytes / store.stats.appends).toFixed(0)} bytes/record`,
    );
    store.close();
    for (const sync of ["NORMAL", "OFF"] as const) {
      const q = sqlite(dir, sync);
      if (!q) {
        console.log("  sqlite: skipped (set VFIO_BENCH_SQLITE=/path/to/node_modules/better-sqlite3)");
        break;
      }
      const us = usPerGrant(`sqlite WAL synchronous=${sync}`, q);
      console.log(`  ratio sqlite(${sync})/store ${(us / st).toFixed(2)}x`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`state store: ${N} grants (3 records each), node ${process.version}`);
run("tmpfs", "/dev/shm");
run("disk", tmpdir());
