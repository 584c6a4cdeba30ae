// gate.ts: owns what a call does while brokerd is handing over to a successor (--take-over): it
// waits. hold() when the hand-over freezes the state, release() when it settles: aborted (the
// successor gave up: calls go on here as if nothing happened) or done (the state is final: calls
// then find brokerd frozen and are refused "restarting", and the client resumes with the
// successor). An aborted hand-over is invisible to clients this way; refusing calls at once would
// send them to resume against a brokerd that is not going away. The wait is bounded by the
// hand-over's own timeouts (restart/handover.ts), which end in abort. No I/O.

export class HandoverGate {
  #held: Promise<void> | undefined;
  #release: (() => void) | undefined;

  /** Calls from now on wait (idempotent). */
  hold(): void {
    if (this.#held) return;
    this.#held = new Promise((resolve) => {
      this.#release = resolve;
    });
  }

  /** Every waiting call goes on (idempotent). */
  release(): void {
    this.#release?.();
    this.#held = undefined;
    this.#release = undefined;
  }

  get held(): boolean {
    return this.#held !== undefined;
  }

  /** Resolves at once unless held, then when released. */
  wait(): Promise<void> {
    return this.#held ?? Promise.resolve();
  }
}
