// The audit journal: one JSON line per security-relevant event (daemon start and stop, sessions,
// device files, mappings, deliveries, denials, refused connections, revocations, policy reloads),
// to a file or stderr. It subscribes to the Broker's events; it never changes state, and it never
// stops brokerd (docs/design.md §6.7): a line that cannot be written is dropped and counted (journal/
// sink.ts), and failures a client can repeat at will are aggregated per identity (journal/
// aggregate.ts) so that no client can fill the disk through us; so is the churn of its grants,
// releases and sessions past a budget of full lines per identity and event. Lines are written with
// every character a line-splitting reader could take for a line end, or a viewer could show as
// something else, escaped. Field names use docs/design.md §3's vocabulary. What it guarantees is written
// down in docs/security.md (section 4).
import { type Broker, VERSION } from "./broker.js";
import { type KeyFields, Repeats, type Summary, uidKeyOf } from "./journal/aggregate.js";
import { grantLines } from "./journal/grants.js";
import { hostLines } from "./journal/host.js";
import type { Handlers, JournalLines } from "./journal/lines.js";
import { refusalLines } from "./journal/refusals.js";
import { revocationLines } from "./journal/revocation.js";
import { sessionLines } from "./journal/sessions.js";
import { JournalSink } from "./journal/sink.js";
import { fsWriter, type JournalWriter } from "./journal/writer.js";
import { logLimited } from "./log.js";

export interface JournalOptions {
  /** The filesystem layer (tests inject failures). */
  writer?: JournalWriter;
  clock?: () => number;
  /** Operator notices (stderr by default). */
  notify?: (line: string) => void;
  /** Aggregation window per identity and result, ms (default 10 s). */
  windowMs?: number;
  /** Identities x results tracked at once (default 1024); beyond, one "other" bucket. */
  maxKeys?: number;
  /** Wait between attempts after a failed write or open, ms (default 1 s). */
  retryMs?: number;
  /** At most one stderr notice about dropped lines per this many ms (default 60 s). */
  noticeMs?: number;
  /** Run tick() every tickMs from an unref'd timer (default 1000; 0: never, tests call tick()). */
  tickMs?: number;
  /**
   * Full lines per identity (uid) and event per window for what a client does successfully
   * (sessions, device files, grants, releases, deliveries) before the rest is counted (default 64).
   */
  churnBudget?: number;
  /** How often the count of aggregated successes is written while its window lasts, ms (default 1000). */
  churnReportMs?: number;
}

/** What the metrics read at scrape time (metrics/journal.ts). */
export interface JournalStats {
  linesWritten: number;
  bytesWritten: number;
  /** By reason (JOURNAL_DROP_REASONS). */
  dropped: ReadonlyMap<string, number>;
  /** By errno. */
  reopenFailures: ReadonlyMap<string, number>;
  /** Events counted into summaries instead of written, by event (JOURNAL_AGGREGATED_EVENTS). */
  suppressed: ReadonlyMap<string, number>;
  writable: boolean;
  aggregationKeys: number;
}

const bigintSafe = (_k: string, v: unknown) => (typeof v === "bigint" ? v.toString() : v);

/**
 * What JSON.stringify leaves raw and must not be, as a class (the same one rpc/strings.ts refuses in
 * client text and the console marks): control characters (DEL; C1, where NEL, U+0085, ends a line
 * for some readers and CSI, U+009B, starts a terminal escape), format characters (bidi overrides
 * and isolates, zero-width characters, the BOM, interlinear annotations, tag characters that hide
 * text), and U+2028 / U+2029 (line and paragraph separators, which JavaScript and other
 * line-splitting readers take for line ends). cgroup paths, which users name, reach the journal.
 */
const UNSAFE_IN_LINE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
const NOT_PRINTABLE_ASCII = /[^ -~\t\n\r]/;

/** `c` as \uXXXX escapes, one per UTF-16 unit (a character past U+FFFF is a surrogate pair). */
function jsonEscape(c: string): string {
  let out = "";
  for (let i = 0; i < c.length; i++) out += `\\u${c.charCodeAt(i).toString(16).padStart(4, "0")}`;
  return out;
}

/** A JSON text with UNSAFE_IN_LINE characters written as \uXXXX escapes (the same JSON value). */
export function escapeLine(json: string): string {
  if (!NOT_PRINTABLE_ASCII.test(json)) return json;
  return json.replace(UNSAFE_IN_LINE, jsonEscape);
}

export class Journal {
  private readonly sink: JournalSink;
  private readonly repeats: Repeats;
  private readonly clock: () => number;
  private readonly churnBudget: number;
  private readonly churnReportMs: number;
  private readonly timer: NodeJS.Timeout | undefined;
  private detach: (() => void) | undefined;
  private closed = false;

  constructor(
    private readonly path: string | undefined,
    opts: JournalOptions = {},
  ) {
    this.clock = opts.clock ?? Date.now;
    this.sink = new JournalSink({
      path,
      writer: opts.writer ?? fsWriter,
      clock: this.clock,
      notify: opts.notify ?? ((line) => logLimited("journal", line)),
      retryMs: opts.retryMs ?? 1000,
      noticeMs: opts.noticeMs ?? 60_000,
    });
    this.repeats = new Repeats({ windowMs: opts.windowMs ?? 10_000, maxKeys: opts.maxKeys ?? 1024 });
    this.churnBudget = opts.churnBudget ?? 64;
    this.churnReportMs = opts.churnReportMs ?? 1000;
    const tickMs = opts.tickMs ?? 1000;
    if (tickMs > 0) {
      this.timer = setInterval(() => this.tick(), tickMs);
      this.timer.unref();
    }
  }

  get stats(): JournalStats {
    const c = this.sink.counts;
    return {
      linesWritten: c.lines,
      bytesWritten: c.bytes,
      dropped: c.dropped,
      reopenFailures: c.reopenFailures,
      suppressed: this.repeats.suppressed,
      writable: this.sink.writable,
      aggregationKeys: this.repeats.size,
    };
  }

  /** Opens the file again (after logrotate moved it away); brokerd does this on SIGHUP. Never throws. */
  reopen(): void {
    this.sink.reopen();
  }

  /** Writes one event line, or drops and counts it. Never throws. */
  write(event: string, fields: Record<string, unknown>): void {
    if (this.closed || this.sink.dropIfWaiting()) return;
    let line: string;
    try {
      line = `${escapeLine(JSON.stringify({ ts: new Date(this.clock()).toISOString(), event, ...fields }, bigintSafe))}\n`;
    } catch {
      this.sink.dropUnwritable();
      return;
    }
    this.sink.write(line);
  }

  /** Closes aggregation windows that are over, and lets the sink retry and notify. Never throws. */
  tick(): void {
    try {
      for (const s of this.repeats.flush(this.clock())) this.writeSummary(s);
      this.sink.tick();
    } catch (e) {
      logLimited("journal.tick", `vfio-brokerd: audit journal upkeep failed: ${(e as Error).message}`);
    }
  }

  /** The "daemon.start" line: what is running, with which policy, serving which devices. */
  started(broker: Broker, extra: Record<string, unknown> = {}): void {
    this.write("daemon.start", {
      version: VERSION,
      pid: process.pid,
      node: process.version,
      digest: broker.policy.digest,
      source: broker.policy.source,
      devices: broker.allDevices().map((d) => ({ id: d.info.id, backend: d.info.backend })),
      journal: this.path ?? "stderr",
      ...extra,
    });
  }

  /**
   * Writes what aggregation still holds and the "daemon.stop" line, then closes the file. Events
   * after this are ignored (brokerd is going away).
   */
  close(reason: string): void {
    if (this.closed) return;
    if (this.timer) clearInterval(this.timer);
    this.detach?.();
    for (const s of this.repeats.flush(this.clock(), true)) this.writeSummary(s);
    this.write("daemon.stop", { reason, pid: process.pid, ...this.dropSummary() });
    this.closed = true;
    this.sink.close();
  }

  /** Subscribes the journal's lines (journal/*.ts) to the Broker's events, each guarded. */
  attach(broker: Broker): void {
    // A batch's lines go in one write (never throws: drops are counted, as for one line).
    broker.addRecorder({ cork: () => this.sink.cork(), uncork: () => this.sink.uncork() });
    const out: JournalLines = {
      write: (event, fields) => this.write(event, fields),
      repeated: (event, key, pid, full) => this.repeated(event, key, pid, full),
      churn: (event, uid, pid, detail, full) => this.churn(event, uid, pid, detail, full),
    };
    const on: Partial<Handlers> = {
      ...sessionLines(out, broker),
      ...grantLines(out, broker),
      ...refusalLines(out),
      ...revocationLines(out),
      ...hostLines(out, broker),
    };
    // A journal handler runs inside the emitter's caller (a request path): it must never throw.
    const guarded = Object.entries(on).map(([event, fn]) => {
      const g = (...args: unknown[]) => {
        try {
          (fn as (...a: unknown[]) => void)(...args);
        } catch (e) {
          this.sink.dropUnwritable();
          logLimited("journal.handler", `vfio-brokerd: audit journal: ${event}: ${(e as Error).message}`);
        }
      };
      broker.on(event as keyof Handlers, g as never);
      return [event, g] as const;
    });
    this.detach = () => {
      for (const [event, g] of guarded) broker.off(event as keyof Handlers, g as never);
    };
  }

  /** An event a client can repeat: the first per identity and result per window in full, then counts. */
  private repeated(
    event: string,
    key: KeyFields,
    pid: number | undefined,
    full: Record<string, unknown>,
  ): void {
    const r = this.repeats.see(event, key, pid, this.clock());
    if (r.closed) this.writeSummary(r.closed);
    if (r.full) this.write(event, full);
  }

  /**
   * Something a client did successfully: written in full up to the identity's budget per event and
   * window, then counted (with a tally of `detail`) into summaries written every churnReportMs.
   */
  private churn(
    event: string,
    uid: number | string,
    pid: number | undefined,
    detail: string,
    full: () => Record<string, unknown>,
  ): void {
    const r = this.repeats.see(event, { uid }, pid, this.clock(), {
      budget: this.churnBudget,
      detail,
      reportMs: this.churnReportMs,
      key: uidKeyOf(event, uid),
    });
    if (r.closed) this.writeSummary(r.closed);
    if (r.full) this.write(event, full());
  }

  private writeSummary(s: Summary): void {
    const { event, ...rest } = s;
    this.write(event, rest);
  }

  private dropSummary(): Record<string, unknown> {
    const dropped = [...this.sink.counts.dropped.values()].reduce((a, b) => a + b, 0);
    return dropped ? { linesDropped: dropped } : {};
  }
}
