// ClaimBindings: AdminService.BindClaim / UnbindClaim / ListClaims on the Broker's side. Checks a
// binding (claims/book.ts), records it in the state store before it takes effect (a restart keeps
// it; a failed write changes nothing), puts it into the policy in force (core/context.ts
// PolicyInForce.claims) and has grants/revocation.ts take back what it no longer allows. Never
// reads the cluster: what a claim binds is what the node agent says (docs/kubernetes.md).
import type { Core } from "../core/context.js";
import { noCounts, type RevokeCounts } from "../core/types.js";
import { exhausted, invalid, restarting } from "../errors.js";
import type { Revocation } from "../grants/revocation.js";
import { ClaimError, type ClaimRec, checkClaim } from "./book.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class ClaimBindings {
  constructor(
    private readonly core: Core,
    private readonly revocation: Revocation,
  ) {}

  private get book() {
    return this.core.policy.claims;
  }

  list(): ClaimRec[] {
    return this.book.all();
  }

  get size(): number {
    return this.book.size;
  }

  /** Binds (or binds again, replacing) a claim; revokes what replaced pods or devices held. */
  bind(input: ClaimRec): { changed: boolean; revoked: RevokeCounts } {
    let c: ClaimRec;
    try {
      c = checkClaim(input);
    } catch (e) {
      if (e instanceof ClaimError) throw invalid(e.message, e.field);
      throw e;
    }
    for (const d of c.devices) this.core.devices.get(d); // NOT_FOUND unless this brokerd serves it
    const full = this.book.refusal(c);
    if (full !== undefined) throw exhausted(full, "claims");
    const old = this.book.get(c.uid);
    if (old && JSON.stringify(old) === JSON.stringify(c)) return { changed: false, revoked: noCounts() };
    this.writable();
    this.core.ledger.claimBound(c);
    const change = this.book.bind(c);
    const revoked = this.revocation.claimsChanged(change.review);
    this.core.events.emit("claim", "bind", c, revoked);
    return { changed: change.changed, revoked };
  }

  /** Unbinds a claim (a claim not bound: nothing to do) and revokes what its pods held through it. */
  unbind(uid: string): { wasBound: boolean; revoked: RevokeCounts } {
    if (!UUID.test(uid)) throw invalid("claim_uid is not a UUID (the claim's metadata.uid)", "claim_uid");
    if (!this.book.get(uid)) return { wasBound: false, revoked: noCounts() };
    this.writable();
    const old = this.book.get(uid)!;
    this.core.ledger.claimUnbound(uid);
    const change = this.book.unbind(uid);
    const revoked = this.revocation.claimsChanged(change.review);
    this.core.events.emit("claim", "unbind", old, revoked);
    return { wasBound: true, revoked };
  }

  /** While brokerd hands over its state is final: a change now would not reach its successor. */
  private writable(): void {
    if (this.core.guard.frozen || this.core.ledger.frozen) throw restarting();
  }
}
