// brokerd's operator log (stderr), rate-limited: a client that can trigger a log line (a refused
// connection, an internal error with its stack) must not be able to flood stderr, journald or the
// disk behind them. Per key (one per call site or kind of message, never client input) at most
// `perKey` lines are printed per interval; the rest are counted, and one line reports how many were
// suppressed when that interval is over. Lines go to fd 2 with a synchronous write that never
// throws: a logger that can fail would only move the crash.
import { writeSync } from "node:fs";

export interface RateLimitedLogOptions {
  /** Lines printed per key per interval (default 5). */
  perKey?: number;
  /** Interval, ms (default 60 s). */
  intervalMs?: number;
  /** Keys tracked at once; more share the key "other" (default 256). */
  maxKeys?: number;
  clock?: () => number;
  /** Where lines go (default: stderr). Must not throw. */
  sink?: (line: string) => void;
  /** Flush suppressed counts from a timer (default true; tests call flush()). */
  timer?: boolean;
}

function stderrLine(line: string): void {
  try {
    writeSync(2, `${line}\n`);
  } catch {
    // stderr is gone or full: nothing sensible is left to tell
  }
}

export class RateLimitedLog {
  private readonly perKey: number;
  private readonly intervalMs: number;
  private readonly maxKeys: number;
  private readonly clock: () => number;
  private readonly sink: (line: string) => void;
  private readonly useTimer: boolean;
  private readonly windows = new Map<string, { since: number; printed: number; suppressed: number }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: RateLimitedLogOptions = {}) {
    this.perKey = opts.perKey ?? 5;
    this.intervalMs = opts.intervalMs ?? 60_000;
    this.maxKeys = opts.maxKeys ?? 256;
    this.clock = opts.clock ?? Date.now;
    this.sink = opts.sink ?? stderrLine;
    this.useTimer = opts.timer ?? true;
  }

  /** Prints `message` unless `key` already printed perKey lines in this interval. Never throws. */
  log(key: string, message: string): void {
    const now = this.clock();
    if (!this.windows.has(key) && this.windows.size >= this.maxKeys) key = "other";
    let w = this.windows.get(key);
    if (w && now - w.since >= this.intervalMs) {
      this.close(key, w, now);
      w = undefined;
    }
    if (!w) {
      w = { since: now, printed: 0, suppressed: 0 };
      this.windows.set(key, w);
    }
    if (w.printed < this.perKey) {
      w.printed++;
      this.sink(message);
      return;
    }
    w.suppressed++;
    if (this.useTimer && !this.timer) {
      this.timer = setInterval(() => this.flush(), this.intervalMs);
      this.timer.unref();
    }
  }

  /** Ends the intervals that are over, reporting what each suppressed. */
  flush(): void {
    const now = this.clock();
    for (const [key, w] of this.windows) if (now - w.since >= this.intervalMs) this.close(key, w, now);
    if (this.windows.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private close(key: string, w: { since: number; suppressed: number }, now: number): void {
    this.windows.delete(key);
    if (w.suppressed > 0)
      this.sink(
        `vfio-brokerd: ${w.suppressed} more "${key}" message(s) suppressed in the last ${Math.round((now - w.since) / 1000)} s`,
      );
  }
}

const shared = new RateLimitedLog();

/**
 * Logs `message` to stderr, at most 5 lines per `key` per minute (then a count of the rest).
 * `key` names the call site ("rpc.internal-error"), never anything a client chose.
 */
export function logLimited(key: string, message: string): void {
  shared.log(key, message);
}
