// TokenBucket: how much of something one connection may do in a burst and over time (HTTP/2
// stream resets, oversized header lists). Pure arithmetic on the caller's clock: no timers, no
// I/O. It never decides what happens to a connection over its budget; server.ts does.

export class TokenBucket {
  #tokens: number;
  #at: number;

  /** Starts full: `burst` at once, then `perSecond` more each second, never above `burst`. */
  constructor(
    readonly burst: number,
    readonly perSecond: number,
    now: number,
  ) {
    this.#tokens = burst;
    this.#at = now;
  }

  /** Takes n tokens at `now` (ms): false (and nothing taken) if there are not that many. */
  take(now: number, n = 1): boolean {
    if (now > this.#at) {
      this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#at) / 1000) * this.perSecond);
      this.#at = now;
    }
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }
}
