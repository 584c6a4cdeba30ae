// Restore and reconcile at start: rebuilds the Broker's sessions, device files, mappings, page
// bookings, tickets and quotas from the StateModel, deciding for each recorded session whether
// its process still lives (pid + start time; a pidfd is opened now and watched from here on).
//   - process gone: everything it held is released (one session.end record);
//   - process alive: the session is restored detached and waits to be resumed. Every page booking
//     it had is kept, so no page is ever booked with a second attribute while that process may
//     still map it. Pending mappings whose ticket is still valid get a fresh backing, so the client
//     can still redeem the ticket; expired ones are released (no fd ever left brokerd for them).
// Revoked mappings still held (holds) are kept booked the same way while their holder process
// lives, and dropped (one hold.end record) when it is gone.
// Every decision is returned for the journal.
import { closeFd, watchOwnPidfd } from "@vfio-broker/native";
import type { Core } from "../core/context.js";
import type { Backing } from "../devices/backend.js";
import type { Charges } from "../grants/charges.js";
import { DeviceFile, type Mapping } from "../grants/device-file.js";
import type { DeviceFiles } from "../grants/device-files.js";
import type { Holders } from "../grants/holders.js";
import type { Layout } from "../grants/layout.js";
import type { Revocation } from "../grants/revocation.js";
import { holderOf } from "../grants/tickets.js";
import { quotaKeys } from "../identity/container.js";
import { cgroupTrustedNow, openIfSameProcess, type PeerIdentity } from "../identity/peer.js";
import { Session } from "../identity/session.js";
import { holdOf, mappingOf } from "./convert.js";
import type { DeviceFileRec, MappingRec, SessionRec } from "./records.js";
import { StateError, type StateStore } from "./store.js";

/** The core's parts a restore books into (the Broker hands them over: broker.ts). */
export interface RestoreParts {
  core: Core;
  charges: Charges;
  holders: Holders;
  deviceFiles: DeviceFiles;
  revocation: Revocation;
  endSession: (s: Session, reason: string) => void;
}

export { openIfSameProcess };

export interface ReconcileDecision {
  session: string;
  uid: number;
  pid: number;
  /** "detached": kept for its live process to resume; "released": its process is gone. */
  action: "detached" | "released";
  why: string;
  deviceFiles: number;
  mappings: number;
  /** Of those, released now (device gone, expired ticket, ...). */
  dropped: number;
}

export interface RestoreReport {
  decisions: ReconcileDecision[];
  /** Holds kept (their holder lives) and dropped (it is gone). */
  holds?: { kept: number; dropped: number };
  ms: number;
}

/** The Backing of a mapping delivered before the restart: the client holds the fd, brokerd nothing. */
function deliveredBacking(rec: MappingRec): Backing {
  return {
    kind: rec.kind,
    fd: -1,
    mmapOffset: 0n,
    length: BigInt(rec.length),
    effectiveAttribute: rec.effective,
    fallbackReason: rec.fallbackReason,
    handedOver() {},
    release() {},
  };
}

export function restoreState(p: RestoreParts, store: StateStore, now = Date.now()): RestoreReport {
  const t0 = performance.now();
  const model = store.model;
  if (model.nextDeviceFileId > p.deviceFiles.nextId) p.deviceFiles.nextId = model.nextDeviceFileId;
  for (const [device, health] of model.health) p.core.devices.setHealth(device, health);
  for (const c of model.claims.values()) p.core.policy.claims.bind(c);
  const decisions: ReconcileDecision[] = [];
  const holds = restoreHolds(p, store);
  for (const rec of [...model.sessions.values()]) {
    const dfs = model.deviceFilesOf(rec.id);
    const mappings = dfs.reduce((n, d) => n + model.mappingsOf(d.id).length, 0);
    const base = { session: rec.id, uid: rec.uid, pid: rec.pid, deviceFiles: dfs.length, mappings };
    const proc = openIfSameProcess(rec.pid, rec.startTime);
    if ("why" in proc) {
      p.core.ledger.sessionEnded(rec.id);
      decisions.push({ ...base, action: "released", why: proc.why, dropped: mappings });
      continue;
    }
    const s = restoreSession(p, rec, proc.pidfd, now);
    let dropped = 0;
    for (const d of dfs) dropped += restoreDeviceFile(p, store, s, d, now);
    decisions.push({ ...base, action: "detached", why: `pid ${rec.pid} is alive`, dropped });
  }
  return { decisions, holds, ms: performance.now() - t0 };
}

/** Books again every hold whose holder process still lives; ends the others. */
function restoreHolds(p: RestoreParts, store: StateStore): { kept: number; dropped: number } {
  const out = { kept: 0, dropped: 0 };
  const procs = new Map<string, { pidfd: number } | { why: string }>();
  for (const rec of [...store.model.holds.values()]) {
    const key = `${rec.pid}:${rec.startTime}`;
    const proc = procs.get(key) ?? openIfSameProcess(rec.pid, rec.startTime);
    procs.set(key, proc);
    if ("why" in proc) {
      p.core.ledger.unheld(rec.id);
      out.dropped++;
      continue;
    }
    const h = holdOf(rec);
    const attrs = p.core.devices.attributeMap(h.deviceId);
    try {
      attrs.check(h.regionIndex, h.regionName, h.offset, h.length, h.attribute);
    } catch (e) {
      throw new StateError(
        store.dir,
        `hold ${rec.id} conflicts with another recorded booking (${(e as Error).message})`,
      );
    }
    attrs.acquire(h.regionIndex, h.offset, h.length, h.attribute);
    p.charges.restore(h.quotaKeys, h.refs, h.length);
    p.holders.adopt(h, proc.pidfd);
    out.kept++;
  }
  // adopt() watches a dup of each pidfd.
  for (const x of procs.values()) if ("pidfd" in x) closeFd(x.pidfd);
  return out;
}

function restoreSession(p: RestoreParts, rec: SessionRec, pidfd: number, now: number): Session {
  const identity: PeerIdentity = {
    uid: rec.uid,
    gid: rec.gid,
    pid: rec.pid,
    cgroup: rec.cgroup,
    // Judged again (the record keeps only the path): the process still lives (pid + start time),
    // and only root can change a root-controlled chain meanwhile.
    cgroupTrusted: cgroupTrustedNow(rec.pid, rec.cgroup),
    groups: rec.groups,
    pidfd,
    pidfdSource: rec.pidfdSource,
    startTime: rec.startTime,
  };
  const tenant = p.core.tenants.tenantOf(rec.uid);
  const s = new Session(rec.id, identity, quotaKeys(identity), rec.tokenHash, "", tenant);
  s.clientName = rec.clientName;
  // No connection yet: no session slot is held until the process resumes it on one.
  s.slotHeld = false;
  s.detachedSince = now;
  p.core.sessions.addDetached(s);
  // On the session's own pidfd, as sessions/open.ts does (endSession closes the watch first).
  s.pidWatch = watchOwnPidfd(pidfd, () => p.endSession(s, "process-exit"));
  return s;
}

/** Restores one device file and its mappings into s; returns how many mappings were dropped. */
function restoreDeviceFile(
  p: RestoreParts,
  store: StateStore,
  s: Session,
  d: DeviceFileRec,
  now: number,
): number {
  const recs = store.model.mappingsOf(d.id);
  const dev = p.core.devices.find(d.device);
  if (!dev) {
    p.core.ledger.deviceFileClosed(d.id);
    p.revocation.notify(s, {
      kind: "revocation",
      deviceFileId: BigInt(d.id),
      cookie: 0n,
      deviceId: d.device,
      reason: "device-gone",
      message: `device ${d.device} is not served by this brokerd any more`,
    });
    return recs.length;
  }
  const df = new DeviceFile(BigInt(d.id), s.id, dev.info, d.layout as Layout, p.core.opts.pageSize);
  df.openedAt = d.openedAt;
  df.requestId = d.requestId;
  s.deviceFiles.set(df.id, df);
  p.charges.restoreDeviceFile(s.quotaKeys);
  s.remember(d.requestId, { deviceFileId: df.id });
  // Cookies of revoked mappings still held (restored before the sessions) stay taken.
  for (const h of p.core.holds.ofSession(s.id, df.id))
    df.reserveCookie(h.cookie, h.length, df.region(h.regionIndex));
  let dropped = 0;
  for (const rec of recs) {
    const m = restoreMapping(p, store, s, df, rec, now);
    if (m) continue;
    dropped++;
    p.core.ledger.released(rec.df, rec.cookie);
    p.revocation.notify(s, {
      kind: "revocation",
      deviceFileId: df.id,
      cookie: BigInt(rec.cookie),
      deviceId: d.device,
      reason: "restart",
      message:
        "the mapping was not delivered before brokerd restarted and its ticket expired; create it again",
    });
  }
  return dropped;
}

/** A pending mapping's backing made again (its ticket may still be redeemed); undefined if it cannot be. */
function reopenBacking(p: RestoreParts, df: DeviceFile, rec: MappingRec, now: number): Backing | undefined {
  if (rec.state === "delivered") return deliveredBacking(rec);
  if (now >= rec.expiresAt || rec.ticket === "") return undefined;
  let backing: Backing;
  try {
    backing = p.core.devices.get(df.device.id).backend.openBacking({
      deviceId: df.device.id,
      region: df.region(rec.region),
      offset: BigInt(rec.offset),
      length: BigInt(rec.length),
      attribute: rec.requested,
      prot: rec.prot,
      allowFallback: rec.effective !== rec.requested,
      allowDeviceFd: rec.kind === "vfio-device-fd",
    });
  } catch {
    return undefined;
  }
  if (backing.effectiveAttribute === rec.effective) return backing;
  backing.release();
  return undefined;
}

function restoreMapping(
  p: RestoreParts,
  store: StateStore,
  s: Session,
  df: DeviceFile,
  rec: MappingRec,
  now: number,
): Mapping | undefined {
  if (!df.device.regions.some((r) => r.index === rec.region)) return undefined;
  const backing = reopenBacking(p, df, rec, now);
  if (!backing) return undefined;
  const m = mappingOf(rec, df, backing);
  const attrs = p.core.devices.attributeMap(df.device.id);
  try {
    attrs.check(m.region.index, m.region.name, m.regionOffset, m.length, rec.effective);
    df.restoreMapping(m);
  } catch (e) {
    backing.release();
    throw new StateError(
      store.dir,
      `mapping ${rec.df}/${rec.cookie} conflicts with another recorded one (${(e as Error).message})`,
    );
  }
  attrs.acquire(m.region.index, m.regionOffset, m.length, rec.effective);
  p.charges.restore(s.quotaKeys, m.refs, m.length);
  // A pending mapping's ticket, or another reference's on a delivered one (it redelivers).
  if (rec.ticket !== "" && now < rec.expiresAt)
    p.core.tickets.restore(rec.ticket, m, holderOf(s), rec.expiresAt);
  else m.ticket = "";
  if (rec.state === "pending") p.charges.restorePending(s, m);
  s.remember(rec.requestId, { cookie: m.cookie });
  return m;
}
