// Where journal lines go, and what happens when they cannot: the file (or stderr) behind a
// JournalWriter that may fail at any call. It never throws to its caller (broker event handlers
// run inside request paths), never buffers (an attacker could grow the buffer), and never leaves
// half a line in the file. A line that cannot be written is dropped and counted by reason; stderr
// hears about drops at most once per noticeMs; writes and reopens are retried every retryMs; when
// writing works again a "journal.gap" line says how many lines are missing, so a reader of the
// journal alone knows it is incomplete.
import { bounded, JOURNAL_DROP_REASONS } from "../metrics/labels.js";
import { describe, errnoOf, type JournalWriter } from "./writer.js";

export interface SinkOptions {
  /** The journal file; undefined writes to stderr (fd 2), which is never opened, closed or reopened. */
  path: string | undefined;
  writer: JournalWriter;
  clock: () => number;
  /** One line for the operator (stderr). Must not throw. */
  notify: (line: string) => void;
  /** How long a failed write or open waits before the next attempt (lines meanwhile are dropped). */
  retryMs: number;
  /** At most one stderr line about drops per this many ms. */
  noticeMs: number;
}

export interface SinkCounts {
  lines: number;
  bytes: number;
  /** Lines dropped, by reason (JOURNAL_DROP_REASONS or "other"). */
  dropped: Map<string, number>;
  /** Failed reopens (SIGHUP, or the file lost its name), by errno. */
  reopenFailures: Map<string, number>;
}

/** Errors that say the fd itself went bad (not just the disk), so a fresh open may help. */
const FD_ERRORS = new Set(["EBADF", "EIO", "ESTALE", "ENXIO", "EPIPE"]);
const NEWLINE = Buffer.from("\n");

/** Lines held by cork() before they are written anyway. */
const CORK_MAX = 1024;

export class JournalSink {
  private fd: number | undefined;
  private readonly ownsFd: boolean;
  private closed = false;
  /** Set while writing fails: nothing is tried before retryAt, and lines are dropped with `reason`. */
  private failure: { reason: string; detail: string; retryAt: number } | undefined;
  /** A reopen is owed (a SIGHUP whose open failed, or the file lost its name); tried from this time. */
  private reopenAt: number | undefined;
  /** The file ends inside a line we could neither finish nor take back: the next write begins with "\n". */
  private torn = false;
  /** Lines held by cork() until uncork(). */
  private corked: string[] | undefined;
  /** Lines dropped since the journal last had a "journal.gap" line written. */
  private gap: { count: number; reasons: Map<string, number>; since: number } | undefined;
  private notice = { at: Number.NEGATIVE_INFINITY, dropped: 0, reasons: new Map<string, number>() };
  private reopenNoticeAt = Number.NEGATIVE_INFINITY;
  readonly counts: SinkCounts = { lines: 0, bytes: 0, dropped: new Map(), reopenFailures: new Map() };

  constructor(private readonly opts: SinkOptions) {
    this.ownsFd = opts.path !== undefined;
    if (!this.ownsFd) this.fd = 2;
    else this.reopenNow(opts.clock(), "open");
  }

  /** True while lines reach the file (or stderr). */
  get writable(): boolean {
    return this.fd !== undefined && this.failure === undefined && !this.closed;
  }

  /**
   * Writes one whole line (ending in "\n"), or drops and counts it. Never throws. While corked the
   * line waits for uncork().
   */
  write(line: string): boolean {
    if (this.closed) return false;
    if (this.corked) {
      this.corked.push(line);
      // A long batch (a session's cleanup) goes out in pieces: written sooner, never later.
      return this.corked.length < CORK_MAX || this.writeLines(this.corked.splice(0));
    }
    return this.writeLines([line]);
  }

  /**
   * Holds lines until uncork(), which writes them in one write(2): an fd-channel batch's lines
   * cost one syscall, not one each. Bounded by its caller (a batch's items, in one synchronous
   * turn), so this is not a buffer a client can grow.
   */
  cork(): void {
    if (!this.closed) this.corked ??= [];
  }

  /** Writes what cork() held, as write() would have (all the lines, or all dropped and counted). */
  uncork(): void {
    const lines = this.corked;
    this.corked = undefined;
    if (lines && lines.length > 0) this.writeLines(lines);
  }

  private writeLines(lines: string[]): boolean {
    const now = this.opts.clock();
    const dropAll = (reason: string) => {
      for (let i = 0; i < lines.length; i++) this.drop(reason, now);
      return false;
    };
    if (this.reopenAt !== undefined && now >= this.reopenAt) this.reopenNow(now, "reopen");
    if (this.failure && now < this.failure.retryAt) return dropAll(this.failure.reason);
    if (this.fd === undefined) return dropAll(this.failure?.reason ?? "EBADF");
    if (this.gap && !this.writeGap(now)) return dropAll(this.failure?.reason ?? "other");
    const e = this.writeWhole(Buffer.from(lines.length === 1 ? lines[0]! : lines.join("")), lines.length);
    if (e !== undefined) {
      this.fail(e, now);
      return dropAll(this.failure!.reason);
    }
    this.failure = undefined;
    return true;
  }

  /**
   * Drops and counts a line without it being formatted, when write() would drop it anyway (waiting
   * to retry): under ENOSPC a flood then costs no JSON.stringify either. false: call write().
   */
  dropIfWaiting(): boolean {
    if (this.closed) return true;
    const now = this.opts.clock();
    if (!this.failure || now >= this.failure.retryAt) return false;
    if (this.reopenAt !== undefined && now >= this.reopenAt) return false;
    this.drop(this.failure.reason, now);
    return true;
  }

  /** Counts a line that never became text (an event that could not be serialised). */
  dropUnwritable(): void {
    this.drop("format", this.opts.clock());
  }

  /** Opens the path again (logrotate moved the file; brokerd does this on SIGHUP). Never throws. */
  reopen(): void {
    if (this.ownsFd && !this.closed) this.reopenNow(this.opts.clock(), "reopen");
  }

  /**
   * Periodic upkeep (about once a second): owed reopens, noticing that the file was deleted under
   * us, marking a gap as soon as writing works again (not only at the next event), and the
   * once-per-interval stderr notice for drops that happened since the last one.
   */
  tick(): void {
    if (this.closed) return;
    const now = this.opts.clock();
    if (this.reopenAt !== undefined && now >= this.reopenAt) this.reopenNow(now, "reopen");
    else if (this.ownsFd && this.fd !== undefined && !this.usable(this.fd)) this.reopenNow(now, "reopen");
    if (this.gap && this.fd !== undefined && (!this.failure || now >= this.failure.retryAt))
      this.writeGap(now);
    this.maybeNotice(now);
  }

  close(): void {
    if (this.closed) return;
    this.uncork();
    this.maybeNotice(this.opts.clock(), true);
    this.closed = true;
    if (this.ownsFd && this.fd !== undefined) this.closeQuietly(this.fd);
    this.fd = undefined;
  }

  // ---- internals ---------------------------------------------------------------------------------

  /** Writes all of data (`lines` whole lines), or nothing: a short write is continued, and if that fails taken back. */
  private writeWhole(data: Buffer, lines = 1): unknown {
    const fd = this.fd!;
    const { writer } = this.opts;
    let done = 0;
    try {
      if (this.torn) {
        if (writer.write(fd, NEWLINE, 0, 1) !== 1) throw noProgress();
        this.torn = false;
      }
      while (done < data.length) {
        const n = writer.write(fd, data, done, data.length - done);
        if (n <= 0) throw noProgress();
        done += n;
      }
    } catch (e) {
      if (done > 0) this.takeBack(fd, done);
      return e;
    }
    this.counts.lines += lines;
    this.counts.bytes += data.length;
    return undefined;
  }

  /**
   * Removes the `n` bytes of a line that did not fit. brokerd is the file's only writer and it is
   * opened O_APPEND, so those bytes are the file's last n. Where that is impossible (stderr, or the
   * truncate fails) the fragment stays, and the next line starts on a fresh line instead.
   */
  private takeBack(fd: number, n: number): void {
    if (this.ownsFd)
      try {
        const size = this.opts.writer.size(fd);
        this.opts.writer.truncate(fd, Math.max(0, size - n));
        return;
      } catch {
        // fall through: mark it torn
      }
    this.torn = true;
  }

  private writeGap(now: number): boolean {
    const g = this.gap!;
    const line = `${JSON.stringify({
      ts: new Date(now).toISOString(),
      event: "journal.gap",
      dropped: g.count,
      reasons: Object.fromEntries(g.reasons),
      since: new Date(g.since).toISOString(),
    })}\n`;
    const e = this.writeWhole(Buffer.from(line));
    if (e !== undefined) {
      this.fail(e, now);
      return false;
    }
    this.gap = undefined;
    this.failure = undefined;
    return true;
  }

  /**
   * Opens the path; on success the new fd replaces the old one. On failure the old fd is kept if
   * its file still has a name (after a logrotate rename, lines keep going to the rotated file),
   * else it is closed and lines are dropped until an open works.
   */
  private reopenNow(now: number, why: "open" | "reopen"): void {
    let fd: number;
    try {
      fd = this.opts.writer.open(this.opts.path!);
    } catch (e) {
      const reason = errnoOf(e);
      if (why === "reopen") bump(this.counts.reopenFailures, bounded(JOURNAL_DROP_REASONS, reason));
      this.reopenAt = now + this.opts.retryMs;
      if (this.fd !== undefined && !this.usable(this.fd)) {
        this.closeQuietly(this.fd);
        this.fd = undefined;
      }
      if (this.fd === undefined)
        this.failure = { reason, detail: describe(e), retryAt: now + this.opts.retryMs };
      if (now - this.reopenNoticeAt >= this.opts.noticeMs) {
        this.reopenNoticeAt = now;
        this.say(
          `vfio-brokerd: audit journal: cannot ${why} ${this.opts.path}: ${describe(e)}; ${
            this.fd !== undefined
              ? "still writing to the file opened before (it may be the rotated one)"
              : "lines are dropped and counted (vfio_broker_journal_lines_dropped_total)"
          }; retrying every ${this.opts.retryMs / 1000} s`,
        );
      }
      return;
    }
    const old = this.fd;
    if (old !== undefined) {
      // Finish a torn last line in the old file, so that file too holds only whole lines.
      if (this.torn)
        try {
          this.opts.writer.write(old, NEWLINE, 0, 1);
        } catch {
          // the old file keeps its fragment; nothing more can be done for it
        }
      this.closeQuietly(old);
    }
    this.fd = fd;
    this.torn = false;
    this.reopenAt = undefined;
    this.failure = undefined;
  }

  /** The operator notice; a notifier that throws must not make write() throw. */
  private say(line: string): void {
    try {
      this.opts.notify(line);
    } catch {
      // nowhere left to say it
    }
  }

  private usable(fd: number): boolean {
    try {
      return this.opts.writer.linked(fd);
    } catch {
      return false;
    }
  }

  private closeQuietly(fd: number): void {
    try {
      this.opts.writer.close(fd);
    } catch {
      // EIO on close: the fd is released anyway
    }
  }

  private fail(e: unknown, now: number): void {
    const reason = errnoOf(e);
    this.failure = { reason, detail: describe(e), retryAt: now + this.opts.retryMs };
    if (this.ownsFd && FD_ERRORS.has(reason)) this.reopenAt ??= now + this.opts.retryMs;
  }

  private drop(reason: string, now: number): false {
    const r = bounded(JOURNAL_DROP_REASONS, reason);
    bump(this.counts.dropped, r);
    this.gap ??= { count: 0, reasons: new Map(), since: now };
    this.gap.count++;
    bump(this.gap.reasons, r);
    this.notice.dropped++;
    bump(this.notice.reasons, r);
    this.maybeNotice(now);
    return false;
  }

  /** Tells stderr about drops since the last notice, at most once per noticeMs (or now, at close). */
  private maybeNotice(now: number, force = false): void {
    const n = this.notice;
    if (n.dropped === 0 || (!force && now - n.at < this.opts.noticeMs)) return;
    const period = Number.isFinite(n.at) ? ` in the last ${Math.round((now - n.at) / 1000)} s` : "";
    const reasons = [...n.reasons].map(([r, c]) => `${r} ${c}`).join(", ");
    const state = this.failure
      ? `${this.failure.detail}; retrying every ${this.opts.retryMs / 1000} s`
      : this.fd !== undefined
        ? "writing again"
        : "closed";
    this.say(
      `vfio-brokerd: audit journal ${this.opts.path ?? "(stderr)"}: dropped ${n.dropped} line(s)${period} (${reasons}); ${state}`,
    );
    this.notice = { at: now, dropped: 0, reasons: new Map() };
  }
}

function bump(m: Map<string, number>, k: string, by = 1): void {
  m.set(k, (m.get(k) ?? 0) + by);
}

function noProgress(): Error {
  return Object.assign(new Error("EIO: write made no progress"), { code: "EIO" });
}
