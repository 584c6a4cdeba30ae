// Ending: the one place where a mapping, a device file or a session ends, whatever the reason (its
// holder released or closed it, its process exited, a ticket expired, the policy, an operator, a
// drain, a device gone, shutdown). Each end is recorded by the ledger first, then made, then
// published. A delivered mapping revoked from a live holder cannot be taken back from the kernel:
// it becomes a hold (grants/holders.ts) and its pages stay booked until the holder releases it or
// exits. Telling a lease why is grants/revocation.ts's.
import { closeFd, pidfdAlive } from "@vfio-broker/native";
import type { Core } from "../core/context.js";
import type { Session } from "../identity/session.js";
import type { Charges } from "./charges.js";
import type { DeviceFile, Mapping } from "./device-file.js";
import type { Holders } from "./holders.js";
import { staysBooked } from "./holds.js";

export class Ending {
  constructor(
    private readonly core: Core,
    private readonly charges: Charges,
    private readonly holders: Holders,
  ) {}

  /** m leaves its device file for `reason`; s is its session (undefined once that is gone). */
  dropMapping(s: Session | undefined, m: Mapping, reason: string): void {
    const { core } = this;
    const df = m.deviceFile;
    if (!df.mappings.has(m.cookie)) return;
    // Revoked from a live holder that has its fd: only asked to unmap, so the pages stay booked.
    const hold =
      s && staysBooked(m.state === "delivered", reason, () => alive(s))
        ? this.holders.holdOf(s, m, reason)
        : undefined;
    if (hold) core.ledger.held(hold);
    core.ledger.released(df.id, m.cookie);
    // A held cookie stays taken: a release of it then can only mean the hold.
    df.removeMapping(m, hold !== undefined);
    // Older tickets of other references find the mapping gone when redeemed (grants/delivery.ts).
    core.tickets.revoke(m.ticket);
    this.charges.settle(s, m);
    m.backing.release();
    if (hold && s) this.holders.hold(hold, s.identity.pidfd);
    else {
      core.devices.attributeMap(df.device.id).release(m.region.index, m.regionOffset, m.length);
      if (s) this.charges.free(s.quotaKeys, m.refs, m.length);
    }
    core.events.emit("mapping.release", m, reason);
  }

  /** ReleaseMapping. reason: "client", or "undeliverable" (brokerd could not send its fd). */
  releaseMapping(s: Session, dfId: bigint, cookie: bigint, reason = "client"): void {
    // A revoked mapping this session still holds: the holder says it has unmapped it.
    if (this.releaseHolds(s, dfId, cookie)) return;
    const df = this.core.guard.ownDeviceFile(s, dfId);
    const m = df.mapping(cookie);
    if (m.refs > 1) {
      // Another reference still holds the cookie: only this one ends.
      m.refs--;
      this.core.ledger.refs(m, "drop");
      this.charges.dropReference(s.quotaKeys);
      this.core.events.emit("mapping.refs", m, "drop");
      return;
    }
    this.dropMapping(s, m, reason);
  }

  /** Closes df and everything mapped in it; how many mappings that ended. */
  closeDeviceFile(s: Session, df: DeviceFile, reason: string): number {
    if (!s.deviceFiles.has(df.id)) return 0;
    const n = df.mappings.size;
    for (const m of [...df.mappings.values()]) this.dropMapping(s, m, reason);
    this.core.ledger.deviceFileClosed(df.id);
    s.deviceFiles.delete(df.id);
    this.charges.closeDeviceFile(s.quotaKeys);
    this.core.events.emit("devicefile.close", df, reason);
    return n;
  }

  /** CloseDevice: the holds the session still has in it, or the device file itself. */
  closeDevice(s: Session, dfId: bigint): number {
    const released = this.releaseHolds(s, dfId);
    if (released > 0 && !s.deviceFiles.has(dfId)) return released;
    return this.closeDeviceFile(s, this.core.guard.ownDeviceFile(s, dfId), "client");
  }

  /** Ends the holds of s in device file dfId (one cookie, or all); how many ended. */
  private releaseHolds(s: Session, dfId: bigint, cookie?: bigint): number {
    const hs = this.core.holds.size === 0 ? [] : this.core.holds.ofSession(s.id, dfId, cookie);
    if (hs.length === 0) return 0;
    this.core.guard.live(s);
    for (const h of hs) this.holders.unhold(h, "release");
    return hs.length;
  }

  /**
   * Releases everything the session holds and ends its lease with LeaseEnded{reason, message}.
   * Idempotent. Its quota slot stays taken until its connection closes (SessionSlots.release).
   * Returns when the lease's last event is on its way (the transport closes the connection then).
   */
  endSession(s: Session, reason: string, message = ""): Promise<void> {
    if (s.ended) return Promise.resolve();
    const { core } = this;
    const t0 = performance.now();
    s.ended = true;
    core.sessions.undetach(s);
    // Its releases' records and journal lines go in few writes, not two per mapping (a client
    // SIGKILLed with 100,000 mappings). Nobody waits on them: a failed write is logged.
    core.recorders.quietly(() => {
      for (const df of [...s.deviceFiles.values()]) this.closeDeviceFile(s, df, reason);
      core.ledger.sessionEnded(s.id);
    });
    s.pidWatch?.close(); // before the pidfd it waits on (watchOwnPidfd)
    closeFd(s.identity.pidfd);
    core.sessions.remove(s);
    const flushed = s.lease
      ? s.lease.end(reason, message || `the session ended: ${reason}`)
      : Promise.resolve();
    s.lease = undefined;
    core.events.emit("session.end", s, reason, performance.now() - t0);
    core.events.emit("session.closed", s, flushed);
    return flushed;
  }
}

/** The session's process still lives (its pidfd says so). */
export function alive(s: Session): boolean {
  try {
    return pidfdAlive(s.identity.pidfd);
  } catch {
    return false;
  }
}
