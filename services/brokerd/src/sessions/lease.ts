// lease.ts: owns the lease rules of a session: one lease per connection, the keepalive interval
// brokerd grants, the expiry (three missed intervals end the session, with LeaseEnded saying so),
// and the reasons a session ends with its lease. LeaseExpiry owns the one timer of a lease. It
// never reads or writes a stream (rpc/broker-service.ts does, and rpc/lease-sink.ts sends the
// events) and never ends a session itself: the owner's expire callback does.

import { precondition } from "../errors.js";
import type { Session } from "../identity/session.js";

/** The keepalive interval brokerd grants a lease unless told otherwise. */
export const KEEPALIVE_INTERVAL_MS = 5000;
/** Keepalive intervals missed in a row that end the session. */
export const MISSED_INTERVALS = 3;

/** Why a session ended with its lease, as LeaseEnded and the journal say it. */
export interface LeaseEnd {
  reason: string;
  message: string;
}

/** The client half-closed its lease: a clean end. */
export const LEASE_CLOSED: LeaseEnd = { reason: "lease-closed", message: "you closed the lease" };
/** The client cancelled its lease call. */
export const LEASE_CANCELLED: LeaseEnd = { reason: "lease-cancelled", message: "" };
/** The lease stream failed. */
export const LEASE_ERROR: LeaseEnd = { reason: "lease-error", message: "" };

/** How long a lease lives without hearing from its client. */
export function leaseExpiryMs(keepaliveIntervalMs: number): number {
  return MISSED_INTERVALS * keepaliveIntervalMs;
}

/** The end of a session whose lease heard nothing for MISSED_INTERVALS intervals. */
export function leaseExpired(keepaliveIntervalMs: number): LeaseEnd {
  return {
    reason: "lease-expired",
    message:
      `no keepalive for ${leaseExpiryMs(keepaliveIntervalMs)} ms (three intervals of ${keepaliveIntervalMs} ms); ` +
      "the session ended and its mappings were released",
  };
}

/** A session has at most one lease: throws FAILED_PRECONDITION if s has one already. */
export function checkNoLease(s: Session): void {
  if (s.lease)
    throw precondition("this connection already has a lease; open one Lease per connection", "lease");
}

/**
 * The expiry timer of one lease: anything the client sends refreshes it; after MISSED_INTERVALS
 * intervals without, `expire` is called once with leaseExpired(). It never keeps brokerd up.
 */
export class LeaseExpiry {
  private readonly timer: NodeJS.Timeout;

  constructor(keepaliveIntervalMs: number, expire: (end: LeaseEnd) => void) {
    this.timer = setTimeout(
      () => expire(leaseExpired(keepaliveIntervalMs)),
      leaseExpiryMs(keepaliveIntervalMs),
    );
    this.timer.unref();
  }

  /** The client sent something: the lease lives MISSED_INTERVALS intervals from now. */
  refresh(): void {
    this.timer.refresh();
  }

  /** The lease's stream closed: it cannot expire any more. */
  stop(): void {
    clearTimeout(this.timer);
  }
}
