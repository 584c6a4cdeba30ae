// Delivery: a mapping's fd leaves brokerd for exactly the process it was granted to. A ticket
// (grants/tickets.ts) is redeemed on the fd channel only by the very process it was issued to
// (uid, pid, and that session's pidfd still alive, so the pid was not recycled); the delivery is
// recorded before the fd is sent. Another reference's ticket on a delivered mapping gets a fresh
// backing (Mappings.redeliver). Owns redemption; never creates or ends a mapping.
import { pidfdAlive } from "@vfio-broker/native";
import type { Core } from "../core/context.js";
import type { Delivery, FdPeer } from "../core/types.js";
import { BrokerError } from "../errors.js";
import type { Charges } from "./charges.js";
import type { Mappings } from "./mappings.js";
import type { RedeemFailure } from "./tickets.js";

export class Deliveries {
  constructor(
    private readonly core: Core,
    private readonly charges: Charges,
    private readonly mappings: Mappings,
  ) {}

  /** Redeems a ticket presented on the fd channel by `peer`; the outcome is published ("fd.delivery"). */
  redeem(ticket: string, peer: FdPeer): Delivery {
    const t0 = performance.now();
    const out = this.outcome(ticket, peer);
    this.core.events.emit(
      "fd.delivery",
      out.ok ? "ok" : out.status,
      out.ok ? out.mapping : undefined,
      performance.now() - t0,
      { uid: peer.uid, pid: peer.pid },
    );
    return out;
  }

  private outcome(ticket: string, peer: FdPeer): Delivery {
    const { core } = this;
    const r = core.tickets.redeem(ticket, (h) => {
      const s = core.sessions.get(h.sessionId);
      return !!s && !s.ended && h.uid === peer.uid && h.pid === peer.pid && pidfdAlive(s.identity.pidfd);
    });
    if (!r.ok) return { ok: false, status: r.why, message: this.refusal(r.why, peer) };
    const m = r.mapping;
    // (The cookie may be another mapping's by now: a released one's range is allocated again.)
    if (m.deviceFile.mappings.get(m.cookie) !== m)
      return { ok: false, status: "revoked", message: "the mapping was released or revoked before delivery" };
    const s = core.sessions.get(m.deviceFile.sessionId);
    // Another reference's ticket went first and its fd is gone: this one gets a fresh fd.
    if (m.state === "delivered" && s)
      try {
        this.mappings.redeliver(s, m);
      } catch (e) {
        const why = e instanceof BrokerError ? e.message : String(e);
        return { ok: false, status: "internal", message: `no fresh fd for cookie ${m.cookie}: ${why}` };
      }
    // Recorded before anything changes and the fd is sent: a restart then keeps the pages booked.
    try {
      core.ledger.delivered(m, m.ticket === ticket ? "" : m.ticket);
    } catch (e) {
      // No fd goes out: the mapping stays pending, and ends when its ticket expires.
      return { ok: false, status: "internal", message: (e as Error).message };
    }
    this.charges.settle(s, m);
    m.state = "delivered";
    if (m.ticket === ticket) m.ticket = "";
    return { ok: true, mapping: m };
  }

  private refusal(why: RedeemFailure, peer: FdPeer): string {
    const msg: Record<RedeemFailure, string> = {
      unknown: "no such ticket; use the ticket CreateMapping returned (32 hex digits)",
      expired: `the ticket expired (tickets live ${this.core.opts.ticketTtlMs} ms); create the mapping again`,
      already_used: "the ticket was already used; each ticket delivers one fd once",
      wrong_peer: `this ticket was issued to another process; present it from the process that called CreateMapping (peer uid ${peer.uid} pid ${peer.pid})`,
      revoked: "the mapping was released or revoked before delivery; create it again",
    };
    return msg[why];
  }
}
