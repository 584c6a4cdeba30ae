// The sweep: brokerd's periodic housekeeping, every sweepIntervalMs. It ends what nobody will
// claim: pending mappings whose last ticket expired, restored sessions not resumed within the
// grace, sessions idle with nothing held; and it lets the holders' enforcement run. Owns the timer
// and those deadlines; the ends themselves are grants/ending.ts's.
import type { Core } from "../core/context.js";
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_RESUME_GRACE_MS } from "../core/types.js";
import type { Ending } from "../grants/ending.js";
import type { Holders } from "../grants/holders.js";

export class Sweep {
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly core: Core,
    private readonly ending: Ending,
    private readonly holders: Holders,
  ) {
    this.timer = setInterval(() => this.run(), core.opts.sweepIntervalMs ?? 500);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  run(now = Date.now()): void {
    const { core } = this;
    this.holders.sweep(now);
    for (const { id, mapping: m } of core.tickets.sweep()) {
      const s = core.sessions.get(m.deviceFile.sessionId);
      // A mapping whose fd no ticket fetched ends when the last ticket issued for it expires.
      if (m.state === "pending" && m.ticket === id) this.ending.dropMapping(s, m, "ticket-expired");
    }
    const idleMs = core.opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const graceMs = core.opts.resumeGraceMs ?? DEFAULT_RESUME_GRACE_MS;
    for (const s of [...core.sessions.values()]) {
      if (!s.detached || now - s.detachedSince < graceMs) continue;
      // Not resumed in time. What its process may still have mapped stays booked until it exits
      // (the pidfd watch ends the session then); a session holding nothing ends now.
      if (s.mappingCount === 0)
        this.ending.endSession(s, "resume-timeout", `not resumed within ${graceMs} ms of brokerd's restart`);
    }
    for (const s of [...core.sessions.values()])
      if (!s.lease && !s.detached && now - s.lastActiveAt > idleMs && s.mappingCount === 0)
        this.ending.endSession(
          s,
          "idle",
          `no call for ${idleMs} ms and nothing held; reconnect when you need brokerd`,
        );
  }
}
