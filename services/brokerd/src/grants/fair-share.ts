// FairShare: one of brokerd's global caps (sessions, fd-channel connections, pending mappings,
// refused connections kept to say why) shared among tenants (identity/subuid.ts: all the uids of
// one user are one tenant), so that no set of tenants can leave another with nothing. Pure
// bookkeeping, no I/O, no clock: the caller asks (check), takes (acquire) and gives back (release).
// It never decides per-identity quotas (grants/quota.ts does, on top of this).
//
// The rule (docs/security.md §2, "Fair shares of the global caps"). Of the cap C, a reserve R is
// kept for tenants holding fewer than a small minimum G. A tenant holding h may take one more when
//   (a) h < G      and total < C       (its minimum: from anywhere, the reserve included), or
//   (b) h < share  and total < C - R   (its share of the pool outside the reserve),
// where share = max(G, floor((C - R) / active)) and `active` counts the tenants holding anything,
// itself included. Nothing is ever taken back: a tenant that took more while fewer tenants were
// active keeps it, but gets no more while it is over its share.
//
// What that guarantees (fair-share.property.test.ts checks each, for any sequence of takes and
// gives by any tenants, for any C, R, G):
//   1. the total never exceeds C (nor any tenant's count goes below 0);
//   2. the units held above the tenants' minimums, sum of max(0, h - G), never exceed C - R;
//   3. so a tenant holding fewer than G is refused only when at least R units are held as
//      tenants' minimums (sum of min(h, G) >= R): whenever at most floor(R / G) tenants are
//      active, itself included, every one of them can always get its G, whatever the others do;
//   4. while the pool outside the reserve has room, a tenant under its share always gets one more;
//   5. a tenant never takes, by rule (b), beyond the share of the moment it takes.
// restore() books what a restarted brokerd finds already granted, with no check (the total may
// then exceed C until those units are given back; the guarantees hold again from there).

export interface Verdict {
  ok: boolean;
  /** What the tenant holds now. */
  held: number;
  /** Its share now (rule b), never below the minimum. */
  share: number;
  /** Tenants holding anything, counting this one. */
  active: number;
  /** "share": it holds its share already; "full": no unit it may take is free. */
  why?: "share" | "full";
}

export class FairShare {
  private readonly held = new Map<string, number>();
  private totalValue = 0;

  constructor(
    /** C: the global cap. */
    readonly cap: number,
    /** R: kept for tenants holding fewer than the minimum (clamped to 0..cap). */
    readonly reserve: number,
    /** G: what every tenant can get while at most floor(R / G) tenants are active. */
    readonly minimum: number,
  ) {
    this.reserve = Math.max(0, Math.min(reserve, cap));
    this.minimum = Math.max(0, minimum);
  }

  get total(): number {
    return this.totalValue;
  }

  /** Tenants holding anything (bounded by what is live). */
  get active(): number {
    return this.held.size;
  }

  heldBy(tenant: string): number {
    return this.held.get(tenant) ?? 0;
  }

  /** Whether tenant may take one more now, and the figures that say why not. */
  check(tenant: string): Verdict {
    const held = this.heldBy(tenant);
    const active = this.held.size + (held === 0 ? 1 : 0);
    const share = Math.max(this.minimum, Math.floor((this.cap - this.reserve) / active));
    if (held < this.minimum && this.totalValue < this.cap) return { ok: true, held, share, active };
    if (held < share && this.totalValue < this.cap - this.reserve) return { ok: true, held, share, active };
    return { ok: false, held, share, active, why: held >= share ? "share" : "full" };
  }

  /** Takes one unit for tenant if the rule allows it; returns the verdict either way. */
  acquire(tenant: string): Verdict {
    const v = this.check(tenant);
    if (v.ok) this.add(tenant, 1);
    return v;
  }

  /** Books n units already granted (a restart's restore), with no check. */
  restore(tenant: string, n = 1): void {
    this.add(tenant, n);
  }

  /** Gives back n units; never below zero. */
  release(tenant: string, n = 1): void {
    const h = this.heldBy(tenant);
    const give = Math.min(h, Math.max(0, n));
    this.add(tenant, -give);
  }

  private add(tenant: string, n: number): void {
    const h = this.heldBy(tenant) + n;
    this.totalValue += n;
    if (h <= 0) this.held.delete(tenant);
    else this.held.set(tenant, h);
  }
}

/**
 * The refusal's message: which tenant, what it holds of what share, and what to do. `tenant` names
 * it as "tenant of uid 60000 (subuid range of alice)"; `noun` is the pool ("sessions").
 */
export function explainRefusal(
  pool: FairShare,
  v: Verdict,
  tenant: string,
  noun: string,
  advice: string,
): string {
  const kept = `${pool.reserve} kept for tenants holding fewer than ${pool.minimum}`;
  const tenants = (n: number) => `${n} active tenant${n === 1 ? "" : "s"}`;
  if (v.why === "share")
    return (
      `${tenant} holds ${v.held} of its ${v.share} ${noun}: brokerd's ${pool.cap} are shared by ` +
      `${tenants(v.active)} (${kept}); ${advice}`
    );
  return (
    `${tenant} holds ${v.held} ${noun} and brokerd's shared ${noun} are all taken (${pool.total} of ` +
    `${pool.cap} held by ${tenants(pool.active)}, ${kept}); ${advice}, or try again shortly`
  );
}

/** Percent of each global cap kept for tenants below their minimum, unless --tenant-reserve says. */
export const DEFAULT_RESERVE_PERCENT = 50;
/**
 * What each tenant can always get of a client cap (sessions, fd-channel connections, pending
 * mappings): one to work with and one to reconnect while the old one is still closing.
 */
export const TENANT_MINIMUM = 2;

/** A client cap shared by tenants: reservePercent of it kept for tenants below `minimum`. */
export function tenantShare(cap: number, reservePercent: number, minimum = TENANT_MINIMUM): FairShare {
  return new FairShare(cap, Math.floor((cap * reservePercent) / 100), minimum);
}
