// Aggregation of repetitive events, so that a client cannot fill the journal's disk through us by
// repeating a failure (unknown tickets, refused connections, denials) or churning grants and
// releases as fast as brokerd answers. Per key (the event, its low-cardinality result fields and
// the kernel-verified uid) the first `budget` occurrences in a window are written in full (1 for
// failures; more for successes, which an auditor wants one by one as long as they come at a human
// rate); later ones in that window are only counted, with a tally of their low-cardinality details
// (device, region, attribute, reason), and a summary line carries the count when the window is over
// (and, with `reportMs`, every reportMs while it lasts, so a kill -9 loses at most that much of the
// count). Full lines plus the summaries' counts are exactly the events seen. The table of keys is
// bounded: once it is full, new keys share one "other" bucket, so many uids cannot grow memory
// either. Pure: the caller passes the time; nothing here does I/O.

export interface RepeatsOptions {
  /** How long a window lasts, ms: the first event of a key in a window is written in full. */
  windowMs: number;
  /** Most keys tracked at once; beyond it events go to the "other" bucket. */
  maxKeys: number;
}

/** The fields that make two events "the same" (uid, result, reason, socket). */
export type KeyFields = Record<string, string | number>;

/** How one occurrence is aggregated. */
export interface SeeOptions {
  /** Full lines per key and window (default 1). */
  budget?: number;
  /** A low-cardinality description tallied in the summary (e.g. "sim0 BAR2 WC memfd"). */
  detail?: string;
  /** Write the count so far every this many ms while the window lasts (default: at its end only). */
  reportMs?: number;
  /** keyOf(event, fields), when the caller has it already. */
  key?: string;
}

/** What makes two events "the same": the event and its key fields. */
export const keyOf = (event: string, fields: KeyFields): string => `${event}\u0000${JSON.stringify(fields)}`;

/** keyOf(event, { uid }) without building and serializing the object (a churn event's key). */
export const uidKeyOf = (event: string, uid: number | string): string =>
  `${event}\u0000{"uid":${typeof uid === "number" && Number.isInteger(uid) ? uid : JSON.stringify(uid)}}`;

/** Distinct details tallied per summary; more are tallied as "other". */
export const MAX_DETAILS = 16;

interface Window {
  event: string;
  fields: KeyFields;
  since: number;
  /** Full lines written in this window. */
  written: number;
  budget: number;
  reportMs: number;
  /** Start of what the next summary counts (the window's start, or the last partial summary). */
  reportedAt: number;
  /** Occurrences over the budget since reportedAt (the ones not written). */
  count: number;
  details: Map<string, number> | undefined;
  lastPid: number | undefined;
}

/** see()'s two answers without a summary, shared (callers only read them). */
const WRITE: { readonly full: boolean } = Object.freeze({ full: true });
const COUNT: { readonly full: boolean } = Object.freeze({ full: false });

/** A line to write when a window closes: `${event}.suppressed` with the key fields and the count. */
export type Summary = Record<string, unknown> & { event: string; count: number };

export class Repeats {
  private readonly windows = new Map<string, Window>();
  private other: { since: number; count: number; events: Map<string, number> } | undefined;
  /** Occurrences counted instead of written, by event ("other" for the overflow bucket). */
  readonly suppressed = new Map<string, number>();

  constructor(private readonly opts: RepeatsOptions) {}

  /** Keys tracked now (for the gauge; at most maxKeys). */
  get size(): number {
    return this.windows.size;
  }

  /**
   * Records one occurrence. `full`: write it in full (the first of its key in a window); else it
   * was counted and will appear in a summary. `closed`: the summary of this key's previous window,
   * which was over (write it first).
   */
  see(
    event: string,
    fields: KeyFields,
    pid: number | undefined,
    now: number,
    opts: SeeOptions = {},
  ): { readonly full: boolean; readonly closed?: Summary } {
    const key = opts.key ?? keyOf(event, fields);
    const w = this.windows.get(key);
    if (w && now - w.since < this.opts.windowMs) {
      if (w.written < w.budget) {
        w.written++;
        return WRITE;
      }
      w.count++;
      w.lastPid = pid;
      if (opts.detail !== undefined) {
        w.details ??= new Map();
        const d = w.details.has(opts.detail) || w.details.size < MAX_DETAILS ? opts.detail : "other";
        w.details.set(d, (w.details.get(d) ?? 0) + 1);
      }
      this.bump(event);
      return COUNT;
    }
    let closed: Summary | undefined;
    if (w) {
      this.windows.delete(key);
      closed = summary(w, now);
    } else if (this.windows.size >= this.opts.maxKeys) {
      this.other ??= { since: now, count: 0, events: new Map() };
      this.other.count++;
      this.other.events.set(event, (this.other.events.get(event) ?? 0) + 1);
      this.bump("other");
      return COUNT;
    }
    this.windows.set(key, {
      event,
      fields,
      since: now,
      written: 1,
      budget: Math.max(1, opts.budget ?? 1),
      reportMs: opts.reportMs ?? 0,
      reportedAt: now,
      count: 0,
      details: undefined,
      lastPid: pid,
    });
    return closed ? { full: true, closed } : WRITE;
  }

  /**
   * Closes the windows that are over (all of them with `all`, at shutdown) and returns one
   * summary per window that counted something. Keys whose window closes are forgotten.
   */
  flush(now: number, all = false): Summary[] {
    const out: Summary[] = [];
    for (const [key, w] of this.windows) {
      if (!all && now - w.since < this.opts.windowMs) {
        // Still open: a partial summary of what it counted so far, if it reports as it goes.
        if (w.reportMs > 0 && w.count > 0 && now - w.reportedAt >= w.reportMs) {
          out.push(summary(w, now)!);
          w.count = 0;
          w.details = undefined;
          w.reportedAt = now;
        }
        continue;
      }
      this.windows.delete(key);
      const s = summary(w, now);
      if (s) out.push(s);
    }
    const o = this.other;
    if (o && (all || now - o.since >= this.opts.windowMs)) {
      this.other = undefined;
      if (o.count > 0)
        out.push({
          event: "suppressed.other",
          uid: "other",
          count: o.count,
          events: Object.fromEntries(o.events),
          since: new Date(o.since).toISOString(),
          windowMs: now - o.since,
          note: `more than ${this.opts.maxKeys} identities/results repeated at once; counted together`,
        });
    }
    return out;
  }

  private bump(event: string): void {
    this.suppressed.set(event, (this.suppressed.get(event) ?? 0) + 1);
  }
}

/** The summary of a closed window, or undefined when nothing was counted in it. */
function summary(w: Window, now: number): Summary | undefined {
  if (w.count === 0) return undefined;
  return {
    event: `${w.event}.suppressed`,
    ...w.fields,
    count: w.count,
    ...(w.details ? { details: Object.fromEntries(w.details) } : {}),
    since: new Date(w.reportedAt).toISOString(),
    windowMs: now - w.reportedAt,
    ...(w.lastPid !== undefined ? { lastPid: w.lastPid } : {}),
  };
}
