// Revocation: what brokerd takes back without the holder asking: what a reloaded policy no longer
// allows, what an operator revokes (a mapping, a session), a drained or vanished device. Each
// revocation tells the holder's lease why, then ends the thing through grants/ending.ts (a
// delivered mapping of a live holder becomes a hold: the kernel cannot take an mmap back) and
// counts what it did. Owns the lease notices of revocations and device health; never books pages.
import type { Core } from "../core/context.js";
import { noCounts, type RevokeCounts } from "../core/types.js";
import type { DeviceHealth } from "../devices/backend.js";
import { notFound } from "../errors.js";
import { cgroupIdentityOf } from "../identity/container.js";
import { describeIdentity } from "../identity/peer.js";
import type { LeaseEvent, Session } from "../identity/session.js";
import { authorizeDevice, authorizeIdentity, authorizeMapping, type Policy } from "../policy/index.js";
import type { DeviceFile } from "./device-file.js";
import type { Ending } from "./ending.js";
import type { Holders } from "./holders.js";
import type { Hold } from "./holds.js";

/** Why a review revokes: the lease's and the metrics' reason, and the words that start its message. */
interface Why {
  reason: "policy" | "claim-unprepared";
  what: string;
}
const POLICY: Why = { reason: "policy", what: "the reloaded policy" };
const CLAIM: Why = {
  reason: "claim-unprepared",
  what: "the policy, now that the pod's ResourceClaim is unprepared,",
};

export class Revocation {
  constructor(
    private readonly core: Core,
    private readonly ending: Ending,
    private readonly holders: Holders,
  ) {}

  /** Sends a lease event, or queues it (bounded) while the session waits to be resumed. */
  notify(s: Session, e: LeaseEvent): void {
    if (s.lease) s.lease.send(e);
    else if (s.detached && e.kind !== "keepalive_ack") s.miss(e); // bounded (Session.miss)
  }

  /** Tells the session's lease that a mapping of df (cookie), or all of df (cookie 0), is revoked. */
  private notifyRevocation(
    s: Session,
    df: DeviceFile,
    cookie: bigint,
    reason: string,
    message: string,
  ): void {
    this.notify(s, {
      kind: "revocation",
      deviceFileId: df.id,
      cookie,
      deviceId: df.device.id,
      reason,
      message,
    });
  }

  /** Tells the session's lease that each of its device files is revoked, with reason. */
  revokeAllOf(s: Session, reason: string, message: string): void {
    for (const df of s.deviceFiles.values()) this.notifyRevocation(s, df, 0n, reason, message);
  }

  /**
   * After a policy reload: revokes, with reason "policy" on the lease, what p no longer allows:
   * sessions of identities it does not name, device files of devices they may no longer open, and
   * mappings whose region, attribute or prot it no longer allows. Quotas lowered by p take effect
   * on new requests only (nothing live is taken away for a quota).
   */
  policyReloaded(p: Policy): RevokeCounts {
    const counts = this.review(p, POLICY, () => true);
    this.core.events.emit("policy.reload", true, []);
    this.published(POLICY, counts);
    return counts;
  }

  /**
   * After a claim binding was removed or narrowed (claims/book.ts): revokes, with reason
   * "claim-unprepared", what the policy in force no longer allows the sessions of those pods.
   */
  claimsChanged(pods: readonly string[]): RevokeCounts {
    if (pods.length === 0) return noCounts();
    const of = new Set(pods);
    const counts = this.review(this.core.policy.current, CLAIM, (s) =>
      of.has(cgroupIdentityOf(s.identity).podUid ?? ""),
    );
    this.published(CLAIM, counts);
    return counts;
  }

  /** Revokes what p no longer allows the sessions `which` selects, as `why` says. */
  private review(p: Policy, why: Why, which: (s: Session) => boolean): RevokeCounts {
    const held0 = this.holders.made;
    const counts = noCounts();
    for (const s of [...this.core.sessions.values()]) {
      if (!which(s)) continue;
      const who = authorizeIdentity(p, s.identity);
      if (!who.allow) {
        counts.mappingsRevoked += s.mappingCount;
        counts.deviceFilesClosed += s.deviceFiles.size;
        counts.sessionsEnded++;
        this.revokeAllOf(s, why.reason, `${why.what} no longer allows you: ${who.message}`);
        this.ending.endSession(s, why.reason, `${why.what} no longer allows ${describeIdentity(s.identity)}`);
        continue;
      }
      for (const df of [...s.deviceFiles.values()]) this.reviewDeviceFile(p, why, s, df, counts);
    }
    counts.mappingsHeld = this.holders.made - held0;
    return counts;
  }

  /** The revocation event of a review, when it took anything. */
  private published(why: Why, counts: RevokeCounts): void {
    if (counts.mappingsRevoked > 0 || counts.sessionsEnded > 0 || counts.deviceFilesClosed > 0)
      this.core.events.emit("revocation", why.reason, counts.mappingsRevoked);
  }

  private reviewDeviceFile(p: Policy, why: Why, s: Session, df: DeviceFile, counts: RevokeCounts): void {
    const dev = authorizeDevice(p, s.identity, df.device.id);
    if (!dev.allow) {
      const message = `${why.what} no longer allows device ${df.device.id}: ${dev.message}`;
      this.notifyRevocation(s, df, 0n, why.reason, message);
      counts.mappingsRevoked += this.ending.closeDeviceFile(s, df, why.reason);
      counts.deviceFilesClosed++;
      return;
    }
    for (const m of [...df.mappings.values()]) {
      const d = authorizeMapping(p, s.identity, {
        device: df.device.id,
        region: m.region.name,
        attribute: m.effectiveAttribute,
        prot: m.prot,
      });
      if (d.allow) continue;
      this.ending.dropMapping(s, m, why.reason);
      const message = `${why.what} no longer allows this mapping: ${d.message}`;
      this.notifyRevocation(s, df, m.cookie, why.reason, message);
      counts.mappingsRevoked++;
    }
  }

  /**
   * Revokes one mapping. Its holder is asked to unmap (lease event); a delivered mapping stays
   * booked until it releases it or exits (RevokeCounts.mappingsHeld). With `enforce`, brokerd kills
   * the holder after enforce.graceMs if it still holds it then. A mapping revoked earlier and still
   * held (no longer in its device file) can be revoked again to enforce it.
   */
  revokeMapping(dfId: bigint, cookie: bigint, reason: string, enforce?: { graceMs: number }): RevokeCounts {
    const held = [...this.core.holds.all()].filter((h) => h.deviceFileId === dfId && h.cookie === cookie);
    const found = this.core.sessions.findDeviceFile(dfId);
    if (!found?.df.mappings.has(cookie) && held.length > 0) return this.reenforce(held, enforce);
    const { session, df } = this.findDeviceFile(dfId);
    const m = df.mapping(cookie);
    const held0 = this.holders.made;
    this.holders.withEnforcement(enforce, () => this.ending.dropMapping(session, m, "operator"));
    this.notifyRevocation(session, df, cookie, "operator", reason || "revoked by an operator");
    this.core.events.emit("revocation", "operator", 1);
    return {
      mappingsRevoked: 1,
      deviceFilesClosed: 0,
      sessionsEnded: 0,
      mappingsHeld: this.holders.made - held0,
    };
  }

  revokeSession(id: string, reason: string, enforce?: { graceMs: number }): RevokeCounts {
    const s = this.core.sessions.get(id);
    if (!s) {
      const held = this.core.holds.ofSessionId(id);
      if (held.length > 0) return this.reenforce(held, enforce);
      throw notFound(`no session ${id}; ListSessions shows the live ones`, "unknown_session");
    }
    const counts: RevokeCounts = {
      mappingsRevoked: s.mappingCount,
      deviceFilesClosed: s.deviceFiles.size,
      sessionsEnded: 1,
    };
    const held0 = this.holders.made;
    this.revokeAllOf(s, "operator", reason || "session revoked by an operator");
    this.holders.withEnforcement(enforce, () => {
      this.ending.endSession(s, "revoked", reason || "session revoked by an operator");
    });
    this.core.events.emit("revocation", "session", counts.mappingsRevoked);
    counts.mappingsHeld = this.holders.made - held0;
    // What an earlier revocation left held in this session is enforced the same way.
    this.holders.enforce(this.core.holds.ofSessionId(id), enforce);
    return counts;
  }

  /** Revoking what is already held: nothing new is taken; with enforce, the holder is killed after the grace. */
  private reenforce(held: Hold[], enforce: { graceMs: number } | undefined): RevokeCounts {
    this.holders.enforce(held, enforce);
    return { ...noCounts(), mappingsHeld: held.length };
  }

  findDeviceFile(id: bigint): { session: Session; df: DeviceFile } {
    const found = this.core.sessions.findDeviceFile(id);
    if (!found)
      throw notFound(`no device file ${id}; ListDeviceFiles shows the open ones`, "unknown_device_file");
    return found;
  }

  /** Every device file of deviceId is revoked and closed (a drain, or the device went away). */
  revokeDevice(deviceId: string, reason: "device-drain" | "device-gone", message: string): RevokeCounts {
    const held0 = this.holders.made;
    const counts = noCounts();
    for (const s of this.core.sessions.values())
      for (const df of [...s.deviceFiles.values()]) {
        if (df.device.id !== deviceId) continue;
        this.notifyRevocation(s, df, 0n, reason, message);
        counts.mappingsRevoked += this.ending.closeDeviceFile(s, df, reason);
        counts.deviceFilesClosed++;
      }
    this.core.events.emit("revocation", reason, counts.mappingsRevoked);
    counts.mappingsHeld = this.holders.made - held0;
    return counts;
  }

  /** A device's health changed: recorded, then every session's lease hears it. */
  setHealth(deviceId: string, health: DeviceHealth): void {
    this.core.ledger.health(deviceId, health);
    this.core.devices.setHealth(deviceId, health);
    for (const s of this.core.sessions.values()) this.notify(s, { kind: "device_health", deviceId, health });
    this.core.events.emit("device.health", deviceId, health);
  }

  /** The device went away: what it served is revoked, its bookings kept only for what is held. */
  deviceGone(deviceId: string): void {
    this.revokeDevice(deviceId, "device-gone", `device ${deviceId} went away`);
    this.setHealth(deviceId, "gone");
    // What revoked holders still map stays booked, should the device come back under its id.
    this.core.devices.forget(deviceId, this.core.holds.ofDevice(deviceId).length > 0);
  }
}
