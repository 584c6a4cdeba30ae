// ReconnectBackoff: after brokerd closed one of an identity's connections for abusing HTTP/2
// (rapid reset, oversized headers, protocol errors), that identity's new connections are refused
// for a while: 1 s after the first strike, doubling with each further strike up to a bound, and
// forgotten after a quiet period. Keyed by tenant (brokerd's server: the user a uid belongs to, from
// the uid alone, the only identity known before the /proc reads), so a user's many uids share one.
// Pure bookkeeping on the caller's clock, with bounded memory: it never touches a socket.

/** A uid, or a tenant's key. */
export type BackoffKey = number | string;

export interface BackoffOptions {
  /** The first strike's wait. */
  baseMs: number;
  /** The longest wait, whatever the number of strikes. */
  maxMs: number;
  /** A key with no strike for this long starts again from baseMs. */
  forgetMs: number;
  /** Keys remembered at most; past it the least recently struck key is forgotten. */
  maxKeys: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  baseMs: 1000,
  maxMs: 60_000,
  forgetMs: 300_000,
  maxKeys: 4096,
};

interface Entry {
  reason: string;
  strikes: number;
  lastStrike: number;
  until: number;
}

export class ReconnectBackoff {
  readonly #entries = new Map<BackoffKey, Entry>();

  constructor(readonly opts: BackoffOptions = DEFAULT_BACKOFF) {}

  /** How many keys are remembered (bounded by maxKeys). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Records a strike for key at now (reason: what it did, for the refusals to say); returns how
   * long its new connections are refused (ms).
   */
  strike(key: BackoffKey, now: number, reason = ""): number {
    let e = this.#entries.get(key);
    if (e && now - e.lastStrike >= this.opts.forgetMs) e = undefined;
    const strikes = (e?.strikes ?? 0) + 1;
    // 2 ** 30 would overflow nothing, but the wait is capped long before.
    const wait = Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** Math.min(strikes - 1, 30));
    const entry = { reason, strikes, lastStrike: now, until: Math.max(e?.until ?? 0, now + wait) };
    // Re-inserted at the end: the Map's order is the order of last strikes.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    while (this.#entries.size > this.opts.maxKeys) {
      const oldest = this.#entries.keys().next().value as BackoffKey;
      this.#entries.delete(oldest);
    }
    return entry.until - now;
  }

  /** Milliseconds key must still wait at now (0: it may connect). */
  remaining(key: BackoffKey, now: number): number {
    const e = this.#entries.get(key);
    if (!e) return 0;
    if (now - e.lastStrike >= this.opts.forgetMs) {
      this.#entries.delete(key);
      return 0;
    }
    return Math.max(0, e.until - now);
  }

  /** Why key was last struck ("" if it is not remembered). */
  reason(key: BackoffKey): string {
    return this.#entries.get(key)?.reason ?? "";
  }

  /** The strikes key has on record at now (0 once forgotten). */
  strikes(key: BackoffKey, now: number): number {
    const e = this.#entries.get(key);
    return e && now - e.lastStrike < this.opts.forgetMs ? e.strikes : 0;
  }
}
