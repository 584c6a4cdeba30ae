// TicketBook: one-time, short-lived secrets that bind one fd delivery to one Mapping and one
// process. 128 random bits, single use, expiring (10 s default). A ticket presented by another
// process is refused without burning it, so a leaked ticket cannot be used to deny the owner.
// Used, expired and revoked tickets are remembered until a grace period passes, so a replay is
// told "already used" / "expired" rather than "unknown"; at most MAX_SPENT_TICKETS of them (the
// oldest spent are forgotten first), so a client granting and releasing in a loop cannot make
// brokerd hold its spent tickets beyond that. Live ones are bounded by the quotas (a pending
// mapping's, a reference's, one per delivered mapping for a retried CreateMapping).
import { randomBytes } from "node:crypto";

export type RedeemFailure = "unknown" | "expired" | "already_used" | "wrong_peer" | "revoked";

export interface TicketHolder {
  sessionId: string;
  uid: number;
  pid: number;
}

/** The holder of a ticket issued to session s: its id and its process's uid and pid. */
export function holderOf(s: { id: string; identity: { uid: number; pid: number } }): TicketHolder {
  return { sessionId: s.id, uid: s.identity.uid, pid: s.identity.pid };
}

interface Ticket<M> {
  id: string;
  mapping: M;
  holder: TicketHolder;
  expiresAt: number;
  state: "live" | "used" | "expired" | "revoked";
}

/** Spent (used, expired, revoked) tickets remembered for their replies, at most. */
export const MAX_SPENT_TICKETS = 4096;

export class TicketBook<M> {
  private readonly tickets = new Map<string, Ticket<M>>();
  /** Spent tickets' ids, oldest spent first (a Set keeps insertion order). */
  private readonly spent = new Set<string>();

  constructor(
    readonly ttlMs: number,
    private readonly graceMs = 60_000,
    private readonly now: () => number = Date.now,
    private readonly maxSpent = MAX_SPENT_TICKETS,
  ) {}

  /** t is spent now: it is remembered for its replies, and the oldest spent beyond the bound go. */
  private spend(t: Ticket<M>, state: "used" | "expired" | "revoked"): void {
    t.state = state;
    this.spent.add(t.id);
    while (this.spent.size > this.maxSpent) {
      const oldest = this.spent.values().next().value as string;
      this.spent.delete(oldest);
      this.tickets.delete(oldest);
    }
  }

  /** Spent tickets remembered for their replies (at most MAX_SPENT_TICKETS). */
  get spentSize(): number {
    return this.spent.size;
  }

  issue(mapping: M, holder: TicketHolder): { ticket: string; expiresAt: number } {
    const id = randomBytes(16).toString("hex");
    const expiresAt = this.now() + this.ttlMs;
    this.tickets.set(id, { id, mapping, holder, expiresAt, state: "live" });
    return { ticket: id, expiresAt };
  }

  /** Puts back a live ticket recorded before a restart (same id, same expiry). */
  restore(id: string, mapping: M, holder: TicketHolder, expiresAt: number): void {
    this.tickets.set(id, { id, mapping, holder, expiresAt, state: "live" });
  }

  /** Whether `id` is issued, unused, not revoked and not expired. */
  isLive(id: string): boolean {
    const t = this.tickets.get(id);
    return t?.state === "live" && this.now() < t.expiresAt;
  }

  /** Redeems a ticket for `peer`; the peer check is the caller's (it knows pidfds). */
  redeem(
    id: string,
    isHolder: (h: TicketHolder) => boolean,
  ): { ok: true; mapping: M } | { ok: false; why: RedeemFailure; holder?: TicketHolder } {
    const t = /^[0-9a-f]{32}$/.test(id) ? this.tickets.get(id) : undefined;
    if (!t) return { ok: false, why: "unknown" };
    if (t.state === "used") return { ok: false, why: "already_used" };
    if (t.state === "revoked") return { ok: false, why: "revoked" };
    if (t.state === "expired" || this.now() >= t.expiresAt) return { ok: false, why: "expired" };
    if (!isHolder(t.holder)) return { ok: false, why: "wrong_peer", holder: t.holder };
    this.spend(t, "used");
    return { ok: true, mapping: t.mapping };
  }

  /** The mapping was released or revoked before delivery: its ticket can no longer deliver. */
  revoke(id: string): void {
    const t = this.tickets.get(id);
    if (t?.state === "live") this.spend(t, "revoked");
  }

  /** A ticket issued for a creation that was then refused (never given out): gone at once. */
  forget(id: string): void {
    this.tickets.delete(id);
    this.spent.delete(id);
  }

  /**
   * Returns the mappings whose tickets expired unused since the last sweep (the caller releases
   * them), and forgets tickets past their grace period.
   */
  sweep(): { id: string; mapping: M }[] {
    const now = this.now();
    const expired: { id: string; mapping: M }[] = [];
    for (const t of this.tickets.values()) {
      if (t.state === "live" && now >= t.expiresAt) {
        this.spend(t, "expired");
        expired.push({ id: t.id, mapping: t.mapping });
      }
      if (now >= t.expiresAt + this.graceMs) this.forget(t.id);
    }
    return expired;
  }

  get size(): number {
    return this.tickets.size;
  }
}
