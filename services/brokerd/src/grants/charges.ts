// Charges: what a mapping costs its identity and brokerd, each charge with its undo. A new mapping
// is charged to the identity's quotas (mappings, bytes, pending) under the rule that allowed it,
// and, while pending (its backing fd not yet delivered), to its tenant's fair share of brokerd's
// global pending cap. Another reference costs one more mapping; a device file one device file.
// Owns those charges and their refunds only; it never changes a Mapping's state or records it.
import type { Txn } from "../core/txn.js";
import { exhausted } from "../errors.js";
import type { Session } from "../identity/session.js";
import { describeTenant } from "../identity/subuid.js";
import type { Rule } from "../policy/index.js";
import type { Mapping } from "./device-file.js";
import { explainRefusal, type FairShare } from "./fair-share.js";
import type { QuotaBook } from "./quota.js";

/** One pending mapping's charge to its tenant's share of the pending cap and its identity's quota. */
interface PendingUnit {
  tenant: string;
  keys: readonly string[];
  settled: boolean;
}

export class Charges {
  /** Each pending mapping's unit of the pending cap (its session may be gone when it settles). */
  private readonly pendingUnit = new WeakMap<Mapping, PendingUnit>();

  constructor(
    private readonly quotas: QuotaBook,
    readonly pending: FairShare,
  ) {}

  /**
   * Charges one pending mapping of `length` bytes to s's identity and a unit of brokerd's pending
   * cap to its tenant; the undos go on t. bind() then ties the pending unit to the mapping made.
   */
  mapping(t: Txn, s: Session, length: bigint, rule: Rule): (m: Mapping) => void {
    const v = this.pending.check(s.tenant.key);
    if (!v.ok)
      throw exhausted(
        explainRefusal(
          this.pending,
          v,
          describeTenant(s.identity.uid, s.tenant),
          "mappings waiting for their fd",
          "fetch the fds of yours (or release them) first",
        ),
        "limit:global_pending",
      );
    const keys = s.quotaKeys;
    this.quotas.charge(keys, "mappings", 1, rule.limits.mappings, s.who);
    t.did(() => this.quotas.refund(keys, "mappings", 1));
    this.quotas.charge(keys, "bytes", length, rule.limits.bytes, s.who);
    t.did(() => this.quotas.refund(keys, "bytes", length));
    this.quotas.charge(keys, "pendingMappings", 1, rule.limits.pendingMappings, s.who);
    const unit: PendingUnit = { tenant: s.tenant.key, keys, settled: false };
    this.pending.acquire(unit.tenant);
    // Undone only while still pending: settle() gives both back once the fd is on its way.
    t.did(() => this.giveBack(unit, true));
    return (m) => this.pendingUnit.set(m, unit);
  }

  private giveBack(unit: PendingUnit, refundQuota: boolean): void {
    if (unit.settled) return;
    unit.settled = true;
    this.pending.release(unit.tenant);
    if (refundQuota) this.quotas.refund(unit.keys, "pendingMappings", 1);
  }

  /** One more reference on an existing mapping: one more against the mappings quota. */
  reference(t: Txn, s: Session, rule: Rule): void {
    this.quotas.charge(s.quotaKeys, "mappings", 1, rule.limits.mappings, s.who);
    t.did(() => this.quotas.refund(s.quotaKeys, "mappings", 1));
  }

  /** A reference given back while others still hold the cookie. */
  dropReference(keys: readonly string[]): void {
    this.quotas.refund(keys, "mappings", 1);
  }

  deviceFile(t: Txn, s: Session, limit: number): void {
    this.quotas.charge(s.quotaKeys, "deviceFiles", 1, limit, s.who);
    t.did(() => this.quotas.refund(s.quotaKeys, "deviceFiles", 1));
  }

  closeDeviceFile(keys: readonly string[]): void {
    this.quotas.refund(keys, "deviceFiles", 1);
  }

  /** A pending mapping is delivered (or gone): it no longer holds a pending slot. */
  settle(s: Session | undefined, m: Mapping): void {
    if (m.state !== "pending") return;
    const unit = this.pendingUnit.get(m);
    this.pendingUnit.delete(m);
    // The identity's pending count is given back only while its session lives (an ended
    // session's keys are gone with it).
    if (unit) this.giveBack(unit, s !== undefined);
  }

  /** What a mapping (or a hold) kept booked is given back: its references and its bytes. */
  free(keys: readonly string[], refs: number, length: bigint): void {
    this.quotas.refund(keys, "mappings", refs);
    this.quotas.refund(keys, "bytes", length);
  }

  /** A mapping or hold found in the state store after a restart: booked again with no check. */
  restore(keys: readonly string[], refs: number, length: bigint): void {
    this.quotas.restore(keys, "mappings", refs);
    this.quotas.restore(keys, "bytes", length);
  }

  restoreDeviceFile(keys: readonly string[]): void {
    this.quotas.restore(keys, "deviceFiles", 1);
  }

  /** A pending mapping found in the state store after a restart: booked with no check. */
  restorePending(s: Session, m: Mapping): void {
    this.pending.restore(s.tenant.key);
    this.pendingUnit.set(m, { tenant: s.tenant.key, keys: s.quotaKeys, settled: false });
    this.quotas.restore(s.quotaKeys, "pendingMappings", 1);
  }
}
