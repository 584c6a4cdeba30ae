// SessionSlots: a connection's slot among brokerd's sessions. It is charged to the identity's
// sessions quota (its first matching policy rule) and to its tenant's fair share of the global cap
// (grants/fair-share.ts), held until the connection closes, and moves with a resumed session.
// Owns those charges only; it never opens, ends or records a session.
import { exhausted } from "../errors.js";
import { explainRefusal, type FairShare } from "../grants/fair-share.js";
import type { QuotaBook } from "../grants/quota.js";
import type { PeerIdentity } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import { describeTenant, type Tenant } from "../identity/subuid.js";
import { limitsFor, type Policy, UNNAMED_LIMITS } from "../policy/index.js";

export class SessionSlots {
  constructor(
    private readonly quotas: QuotaBook,
    readonly share: FairShare,
  ) {}

  /**
   * Takes a slot for a new session of identity (its tenant's fair share first, then the
   * identity's own quota) and returns its undo. Throws RESOURCE_EXHAUSTED naming the limit.
   */
  take(policy: Policy, identity: PeerIdentity, tenant: Tenant, keys: readonly string[]): () => void {
    const v = this.share.check(tenant.key);
    if (!v.ok)
      throw exhausted(
        explainRefusal(
          this.share,
          v,
          describeTenant(identity.uid, tenant),
          "sessions",
          "close a connection first",
        ),
        "limit:global_sessions",
      );
    // The identity's slot: its first matching rule's sessions quota (a few for identities no rule names).
    this.quotas.charge(keys, "sessions", 1, limitsFor(policy, identity).sessions, `uid ${identity.uid}`);
    this.share.acquire(tenant.key);
    return () => {
      this.quotas.refund(keys, "sessions", 1);
      this.share.release(tenant.key);
    };
  }

  /** The session's connection closed: its identity and tenant may use the slot again. Idempotent. */
  release(s: Session): void {
    if (!s.slotHeld) return;
    s.slotHeld = false;
    this.quotas.refund(s.quotaKeys, "sessions", 1);
    this.share.release(s.tenant.key);
  }

  /** A resumed session takes over the fresh one's slot (charged to the tenant it opened with). */
  move(fresh: Session, found: Session): void {
    found.slotHeld = fresh.slotHeld;
    if (fresh.slotHeld && fresh.tenant.key !== found.tenant.key) {
      this.share.release(fresh.tenant.key);
      this.share.restore(found.tenant.key);
    }
    fresh.slotHeld = false;
  }

  /**
   * uid already holds as many sessions as any rule could allow it (gid and cgroup unknown yet), or
   * its tenant may take no more of brokerd's sessions now: no connection of it can be admitted.
   */
  exhausted(policy: Policy, uid: number, tenant: Tenant): boolean {
    if (!this.share.check(tenant.key).ok) return true;
    let most = UNNAMED_LIMITS.sessions;
    for (const r of policy.rules)
      if (r.match.any || !r.match.uids || r.match.uids.includes(uid))
        most = Math.max(most, r.limits.sessions);
    return this.quotas.usage(`uid:${uid}`).sessions >= most;
  }
}
