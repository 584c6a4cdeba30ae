// StateStore: the crash-consistent store of grant state under the state directory. An append-only
// log of records (records.ts) over a snapshot; the in-memory StateModel is the replay of both.
//
// Why write(2) and no fsync per record: a grant is only meaningful while its client process lives,
// and no process outlives a reboot. What must survive is brokerd's own death (kill -9, a crash, an
// upgrade), and a completed write(2) is in the kernel's page cache, which survives the process.
// So each record is in a write(2) before the reply that depends on it; no fsync. Records of
// several calls may share one write(2) (cork() for a batch, group() for the calls of one turn of
// the event loop); the replies then wait for it. A store left by an earlier boot is set aside at
// start (its boot id differs): nothing in it can be live. Measured
// cost per record and the choice against SQLite are in BENCHMARKS.md ("state store").
//
// Files: state.snap (header line "vfio-broker-state 1 <gen> <crc32> <bytes>", then the snapshot
// JSON) and state.<gen>.log. Compaction writes a new snapshot with gen+1 (tmp, fsync), creates
// state.<gen+1>.log, renames the snapshot into place and deletes the old log: a crash at any point
// leaves either the old snapshot with its log or the new snapshot with an empty or new log, never
// both applied.
//
// The directory must pass native/src/dir-rule.ts (ours, 0700, nobody else can write it or its
// way) and is held by fd: every file is opened, renamed and removed through that fd, never through
// a symbolic link (native/src/safe-dir.ts). It holds live tickets, so it is never anyone else's.
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { openInSafeDir, openSafeDir, type SafeDir, UnsafePlaceError } from "@vfio-broker/native";
import { logLimited } from "../log.js";
import { type Deferred, deferred } from "./deferred.js";
import { ModelError, type Snapshot, StateModel } from "./model.js";
import { crcHex, decodeLog, encodeRecordsBytes, RecordError, type StateRecord } from "./records.js";

/** A store brokerd must not start from; says which file and what an operator can do. */
export class StateError extends Error {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(
      `the state store ${file} is unusable: ${problem}. brokerd will not start from a partial view of ` +
        "the grants (it could book one page twice). If no client of the previous brokerd is still running " +
        `(e.g. they were all restarted), move the state directory aside (mv ${join(file, "..")} ` +
        `${join(file, "..")}.bad) and start again; otherwise restore the file from a copy.`,
    );
  }
}

const RESOLVED = Promise.resolve();

/** group()'s records could not be written (cause: the write's error). */
export class GroupWriteError extends Error {
  constructor(override readonly cause: unknown) {
    super(`the state records were not written: ${(cause as Error)?.message ?? String(cause)}`);
  }
}

export interface StoreStats {
  appends: number;
  /** write(2)s that carried them (fewer than appends: cork() and group() write several at once). */
  writes: number;
  bytes: number;
  compactions: number;
  /** Compactions that failed (a full disk): the store stayed as it was, and tries again later. */
  compactFailures: number;
  lastCompactMs: number;
}

export interface OpenedStore {
  store: StateStore;
  model: StateModel;
  /** A last record cut short by a crash, dropped ("" if none). */
  torn: string;
  /** Why the files found were set aside instead of used ("" if they were used or none existed). */
  discarded: string;
}

const SNAP = "state.snap";
const logName = (gen: number) => `state.${gen}.log`;
/** Compact when the log holds this many records more than twice what is live. */
const COMPACT_SLACK = 4096;

/** The whole of `name` in dir, read through the dir's fd without following a link. */
function readIn(dir: SafeDir, name: string): string {
  const fd = openInSafeDir(dir, name, constants.O_RDONLY);
  try {
    return readFileSync(fd, "utf8");
  } finally {
    closeSync(fd);
  }
}

const APPEND = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT;

function readSnapshot(dir: SafeDir): { gen: number; snap: Snapshot } {
  const file = dir.show(SNAP);
  const text = readIn(dir, SNAP);
  const nl = text.indexOf("\n");
  const m = /^vfio-broker-state 1 (\d+) ([0-9a-f]{8}) (\d+)$/.exec(nl < 0 ? text : text.slice(0, nl));
  if (!m) throw new StateError(file, "its first line is not a vfio-broker-state v1 header");
  const body = text.slice(nl + 1);
  if (Buffer.byteLength(body) !== Number(m[3]))
    throw new StateError(file, `it is truncated (${Buffer.byteLength(body)} of ${m[3]} bytes)`);
  if (crcHex(body) !== m[2]) throw new StateError(file, "its CRC-32 does not match (the file is damaged)");
  try {
    return { gen: Number(m[1]), snap: JSON.parse(body) as Snapshot };
  } catch (e) {
    throw new StateError(file, `bad JSON: ${(e as Error).message}`);
  }
}

/** Records held by cork() before they are written anyway. */
const CORK_MAX = 1024;

export class StateStore {
  readonly stats: StoreStats = {
    appends: 0,
    writes: 0,
    bytes: 0,
    compactions: 0,
    compactFailures: 0,
    lastCompactMs: 0,
  };
  private fd: number;
  /** A failed compaction is tried again once the log has this many applied records. */
  private compactAfter = 0;
  /** Bytes in the current log: a failed write is cut back to here. */
  private size = 0;
  /** Records held by cork() until uncork(). */
  private corked: StateRecord[] | undefined;
  /** group()'s records not written yet, and the promise every group() call waiting for them shares. */
  private grouped: StateRecord[] = [];
  private groupDone: Deferred | undefined;
  private groupDue = false;
  /** The array group() holds a call's records in (emptied after each call: none made per call). */
  private readonly groupScratch: StateRecord[] = [];
  private readonly flushLater = (): void => this.flushGroup();

  private constructor(
    readonly dir: string,
    private readonly safe: SafeDir,
    private gen: number,
    readonly model: StateModel,
  ) {
    this.fd = openInSafeDir(safe, logName(gen), APPEND);
    this.size = fstatSync(this.fd).size;
  }

  /**
   * Opens (or creates) the store in dir and replays it. A store from another boot is moved to
   * dir/previous-boot/ and a fresh one started. Throws StateError on damage.
   */
  static open(dir: string, bootId: string): OpenedStore {
    // It holds live tickets: ours alone (another owner means someone else chose this directory),
    // 0700, and reached only through this fd.
    const safe = openSafeDir(dir, { role: "--state-dir", create: 0o700, mode: 0o700 });
    try {
      return StateStore.openIn(dir, safe, bootId);
    } catch (e) {
      safe.close();
      throw e;
    }
  }

  private static openIn(dir: string, safe: SafeDir, bootId: string): OpenedStore {
    let { gen, model, torn } = StateStore.replayIn(dir, safe);
    let discarded = "";
    if (model.bootId !== "" && model.bootId !== bootId) {
      // Every process of that boot is gone, and with them every grant: keep the files for a look.
      const prev = join(dir, "previous-boot");
      const prevAt = safe.at("previous-boot");
      if (!existsSync(prevAt)) mkdirSync(prevAt, { mode: 0o700 });
      const st = lstatSync(prevAt);
      if (!st.isDirectory() || st.uid !== process.geteuid?.())
        throw new UnsafePlaceError(`${prev} is not a directory of brokerd's uid; remove it`);
      for (const f of readdirSync(safe.self))
        if (f.startsWith("state.")) renameSync(safe.at(f), `${prevAt}/${f}`);
      discarded = `the state was written during another boot (${model.bootId}); moved to ${prev}`;
      const fresh = new StateModel();
      fresh.run = model.run;
      fresh.nextDeviceFileId = model.nextDeviceFileId;
      model = fresh;
      gen = 0;
      torn = "";
    }
    // Other generations' logs are leftovers of a compaction cut short.
    for (const f of readdirSync(safe.self)) {
      if (!/^state\.\d+\.log$/.test(f) || f === logName(gen)) continue;
      // Only a file of ours is removed; anything else under that name is for a person to look at.
      if (!lstatSync(safe.at(f)).isFile())
        throw new UnsafePlaceError(`${join(dir, f)} is not a regular file; remove it`);
      unlinkSync(safe.at(f));
    }
    const store = new StateStore(dir, safe, gen, model);
    // A torn tail is rewritten away by compacting at once, so the next record is not glued to it.
    if (torn !== "" || discarded !== "") store.compact();
    return { store, model, torn, discarded };
  }

  /**
   * Reads the snapshot and log in dir and replays them, writing nothing (the hand-over's check of
   * the store, state/validate.ts). Throws StateError on damage, UnsafePlaceError on a directory
   * that fails the directory rule.
   */
  static replay(dir: string): { gen: number; model: StateModel; torn: string } {
    const safe = openSafeDir(dir, { role: "--state-dir" });
    try {
      return StateStore.replayIn(dir, safe);
    } finally {
      safe.close();
    }
  }

  private static replayIn(dir: string, safe: SafeDir): { gen: number; model: StateModel; torn: string } {
    const snapFile = safe.at(SNAP);
    let gen = 0;
    let model = new StateModel();
    let torn = "";
    try {
      if (existsSync(snapFile)) {
        const r = readSnapshot(safe);
        gen = r.gen;
        model = StateModel.fromSnapshot(r.snap);
      }
      if (existsSync(safe.at(logName(gen)))) {
        const log = decodeLog(readIn(safe, logName(gen)));
        torn = log.torn;
        for (const rec of log.records) model.apply(rec);
      }
    } catch (e) {
      if (e instanceof StateError || e instanceof UnsafePlaceError) throw e;
      if (e instanceof RecordError || e instanceof ModelError)
        throw new StateError(join(dir, logName(gen)), e.message);
      throw e;
    }
    return { gen, model, torn };
  }

  /**
   * Writes one record (one write(2)), then applies it. Throws if the write fails. While corked the
   * record waits for uncork().
   */
  append(r: StateRecord): void {
    if (this.corked) {
      this.corked.push(r);
      // A long batch (a session's cleanup) goes out in pieces: written sooner, never later.
      if (this.corked.length >= CORK_MAX) this.write(this.corked.splice(0));
      return;
    }
    this.write([r]);
  }

  /**
   * Holds records until uncork(), which writes them in one write(2) (an fd-channel batch's records).
   * The caller sends no reply that depends on them before uncork() returned.
   */
  cork(): void {
    this.corked ??= [];
  }

  /** Writes and applies what cork() held. Throws if the write fails: then none of them is applied. */
  uncork(): void {
    const recs = this.corked;
    this.corked = undefined;
    if (recs && recs.length > 0) this.write(recs);
  }

  /** Writes recs (after what group() holds, in the same write(2)); throws if that failed. */
  private write(recs: StateRecord[]): void {
    if (this.grouped.length === 0) {
      this.writeNow(recs);
      return;
    }
    // group()'s held records go first, in the same write(2): the order of the log stays the order
    // of the changes, and a record never lands before one it follows (a delivery before its creation).
    const done = this.groupDone;
    const all = this.grouped.concat(recs);
    this.grouped = [];
    this.groupDone = undefined;
    try {
      this.writeNow(all);
    } catch (e) {
      done?.reject(new GroupWriteError(e));
      throw e;
    }
    done?.resolve();
  }

  /**
   * Group commit: runs fn with the records it appends held, and writes them with those of every
   * other group() call of this turn of the event loop in one write(2), at setImmediate (or sooner,
   * ahead of any other record). Resolves once they are written; rejects with GroupWriteError if
   * that write failed (then none of them is applied), else with what fn threw, after the write.
   * The caller sends nothing that depends on them before it settles.
   */
  group(fn: () => void): Promise<void> {
    if (this.corked) {
      fn(); // inside cork(): the corked batch writes them before its caller goes on
      return RESOLVED;
    }
    const recs = this.groupScratch;
    this.corked = recs;
    let threw: { e: unknown } | undefined;
    try {
      fn();
    } catch (e) {
      threw = { e };
    } finally {
      // (Unless an uncork() inside fn wrote them already.)
      if (this.corked === recs) for (let i = 0; i < recs.length; i++) this.grouped.push(recs[i]!);
      recs.length = 0;
      this.corked = undefined;
    }
    if (this.grouped.length === 0) return threw ? Promise.reject(threw.e) : RESOLVED;
    if (!this.groupDue) {
      this.groupDue = true;
      setImmediate(this.flushLater);
    }
    // Every call of this turn waits for the same write: one promise for all of them.
    this.groupDone ??= deferred();
    if (!threw) return this.groupDone.promise;
    const e = threw.e;
    const fail = (): never => {
      throw e;
    };
    return this.groupDone.promise.then(fail, fail);
  }

  /** Writes group()'s held records now (a hand-over's freeze, a close); a failure is the waiters'. */
  flushGroup(): void {
    this.groupDue = false;
    if (this.grouped.length === 0) return;
    try {
      this.write([]);
    } catch {
      // each waiter was told
    }
  }

  /**
   * Writes whole records or none: a write cut short (ENOSPC after part of it fit) is truncated
   * away, so the next record does not start in the middle of a line (which would make the whole
   * log unreadable at the next start). A compaction that fails does not fail the write (its
   * records are in the log); it is tried again after COMPACT_SLACK more records.
   */
  private writeNow(recs: StateRecord[]): void {
    const data = encodeRecordsBytes(recs);
    let off = 0;
    try {
      while (off < data.length) off += writeSync(this.fd, data, off);
    } catch (e) {
      if (off > 0) ftruncateSync(this.fd, this.size);
      throw e;
    }
    this.size += data.length;
    for (const r of recs) this.model.apply(r);
    this.stats.appends += recs.length;
    this.stats.writes++;
    this.stats.bytes += data.length;
    if (
      this.model.applied > 2 * this.model.liveCount + COMPACT_SLACK &&
      this.model.applied >= this.compactAfter
    )
      try {
        this.compact();
      } catch (e) {
        // Not at every write while the disk stays full: after another COMPACT_SLACK records.
        this.compactAfter = this.model.applied + COMPACT_SLACK;
        this.stats.compactFailures++;
        logLimited(
          "state.compact",
          `vfio-brokerd: state store: compaction failed (${(e as Error).message}); trying again after ${COMPACT_SLACK} more records`,
        );
      }
  }

  /**
   * Writes the model as a new snapshot and starts an empty log. Whatever step fails (a full disk),
   * the store stays as it was: the next log is created before the snapshot that names it is put in
   * place, and the old log is let go only after.
   */
  compact(): void {
    const t0 = performance.now();
    const body = JSON.stringify(this.model.snapshot());
    const next = this.gen + 1;
    const tmp = `${SNAP}.tmp`;
    const nextLog = logName(next);
    let nextFd: number | undefined;
    try {
      const fd = openInSafeDir(this.safe, tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC);
      try {
        const text = Buffer.from(
          `vfio-broker-state 1 ${next} ${crcHex(body)} ${Buffer.byteLength(body)}\n${body}`,
        );
        let off = 0;
        while (off < text.length) off += writeSync(fd, text, off);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      nextFd = openInSafeDir(this.safe, nextLog, APPEND);
      renameSync(this.safe.at(tmp), this.safe.at(SNAP));
    } catch (e) {
      if (nextFd !== undefined) closeSync(nextFd);
      for (const f of [tmp, nextLog]) rmSync(this.safe.at(f), { force: true });
      throw e;
    }
    const old = this.fd;
    this.fd = nextFd;
    this.size = 0;
    closeSync(old);
    try {
      unlinkSync(this.safe.at(logName(this.gen)));
    } catch {
      /* already gone */
    }
    this.gen = next;
    this.model.applied = 0;
    this.compactAfter = 0;
    this.stats.compactions++;
    this.stats.lastCompactMs = performance.now() - t0;
  }

  close(): void {
    this.flushGroup();
    closeSync(this.fd);
    this.safe.close();
  }
}

/** This boot's id (a store from another boot holds no live grant). */
export function currentBootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}
