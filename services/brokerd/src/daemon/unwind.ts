// unwind.ts: owns the start's way back. Each part the start opens (the places, the lock, the state
// store, the backends, the journal, the sockets, metrics) is registered here with how to close it,
// the moment it exists; a failure before the start completes closes them all, the last opened
// first, and the error that stopped the start is the one the caller sees. It never opens anything
// and never runs once the start completed (the daemon's shutdown, daemon/shutdown.ts, owns that).
export class Unwind {
  private readonly steps: { what: string; close: (why: Error) => void | Promise<void> }[] = [];

  /**
   * `what` is open from now on; close() closes it, told why the start failed (called at most once,
   * only on a failed start).
   */
  add(what: string, close: (why: Error) => void | Promise<void>): void {
    this.steps.push({ what, close });
  }

  /**
   * Closes every part registered, last first. A part that fails to close is said on stderr and the
   * others are still closed: the start's own error stays the one reported.
   */
  async run(why: unknown): Promise<void> {
    const error = why instanceof Error ? why : new Error(String(why));
    for (const { what, close } of this.steps.splice(0).reverse()) {
      try {
        await close(error);
      } catch (e) {
        console.error(`vfio-brokerd: closing ${what} after the failed start: ${(e as Error).message}`);
      }
    }
  }

  /** The start completed: from here the daemon's shutdown closes what was opened. */
  done(): void {
    this.steps.length = 0;
  }
}
