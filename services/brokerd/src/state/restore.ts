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
import { closeFd, watchPidfd } from "@vfio-broker/native";
import type { Broker } from "../broker.js";
import type { Backing } from "../devices/backend.js";
import { DeviceFile, type Mapping } from "../grants/device-file.js";
import type { Hold } from "../grants/holds.js";
import type { Layout } from "../grants/layout.js";
import { holderOf } from "../grants/tickets.js";
import { quotaKeys } from "../identity/container.js";
import { cgroupTrustedNow, openIfSameProcess, type PeerIdentity } from "../identity/peer.js";
import { Session } from "../identity/session.js";
import type { DeviceFileRec, HoldRec, MappingRec, SessionRec } from "./records.js";
import { StateError, type StateStore } from "./store.js";

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

export function restoreState(broker: Broker, store: StateStore, now = Date.now()): RestoreReport {
  const t0 = performance.now();
  const model = store.model;
  if (model.nextDeviceFileId > broker.nextDeviceFileId) broker.nextDeviceFileId = model.nextDeviceFileId;
  for (const [device, health] of model.health) broker.deviceHealth.set(device, health);
  const decisions: ReconcileDecision[] = [];
  const holds = restoreHolds(broker, store);
  for (const rec of [...model.sessions.values()]) {
    const dfs = model.deviceFilesOf(rec.id);
    const mappings = dfs.reduce((n, d) => n + model.mappingsOf(d.id).length, 0);
    const base = { session: rec.id, uid: rec.uid, pid: rec.pid, deviceFiles: dfs.length, mappings };
    const proc = openIfSameProcess(rec.pid, rec.startTime);
    if ("why" in proc) {
      store.append({ t: "session.end", id: rec.id });
      decisions.push({ ...base, action: "released", why: proc.why, dropped: mappings });
      continue;
    }
    const s = restoreSession(broker, rec, proc.pidfd, now);
    let dropped = 0;
    for (const d of dfs) dropped += restoreDeviceFile(broker, store, s, d, now);
    decisions.push({ ...base, action: "detached", why: `pid ${rec.pid} is alive`, dropped });
  }
  return { decisions, holds, ms: performance.now() - t0 };
}

/** Books again every hold whose holder process still lives; ends the others. */
function restoreHolds(broker: Broker, store: StateStore): { kept: number; dropped: number } {
  const out = { kept: 0, dropped: 0 };
  const procs = new Map<string, { pidfd: number } | { why: string }>();
  for (const rec of [...store.model.holds.values()]) {
    const key = `${rec.pid}:${rec.startTime}`;
    const proc = procs.get(key) ?? openIfSameProcess(rec.pid, rec.startTime);
    procs.set(key, proc);
    if ("why" in proc) {
      store.append({ t: "hold.end", id: rec.id });
      out.dropped++;
      continue;
    }
    const h = holdOf(rec);
    const attrs = broker.attributeMap(h.deviceId);
    try {
      attrs.check(h.regionIndex, h.regionName, h.offset, h.length, h.attribute);
    } catch (e) {
      throw new StateError(
        store.dir,
        `hold ${rec.id} conflicts with another recorded booking (${(e as Error).message})`,
      );
    }
    attrs.acquire(h.regionIndex, h.offset, h.length, h.attribute);
    broker.quotas.restore(h.quotaKeys, "mappings", h.refs);
    broker.quotas.restore(h.quotaKeys, "bytes", h.length);
    broker.adoptHold(h, proc.pidfd);
    out.kept++;
  }
  // adoptHold watches a dup of each pidfd.
  for (const p of procs.values()) if ("pidfd" in p) closeFd(p.pidfd);
  return out;
}

function holdOf(r: HoldRec): Hold {
  return {
    id: r.id,
    pid: r.pid,
    startTime: r.startTime,
    uid: r.uid,
    sessionId: r.session,
    deviceFileId: BigInt(r.df),
    cookie: BigInt(r.cookie),
    deviceId: r.device,
    regionIndex: r.region,
    regionName: r.regionName,
    offset: BigInt(r.offset),
    length: BigInt(r.length),
    attribute: r.attribute,
    prot: r.prot,
    kind: r.kind,
    refs: r.refs,
    quotaKeys: r.quotaKeys,
    rule: r.rule,
    reason: r.reason,
    since: r.since,
    enforceAt: r.enforceAt,
    enforceBy: r.enforceBy,
    enforced: false,
  };
}

function restoreSession(broker: Broker, rec: SessionRec, pidfd: number, now: number): Session {
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
  const s = new Session(rec.id, identity, quotaKeys(identity), rec.tokenHash, "", broker.tenantOf(rec.uid));
  s.clientName = rec.clientName;
  // No connection yet: no session slot is held until the process resumes it on one.
  s.slotHeld = false;
  s.detachedSince = now;
  broker.sessions.set(s.id, s);
  broker.sessionsByToken.set(s.tokenHash, s);
  broker.detachedCount++;
  s.pidWatch = watchPidfd(pidfd, () => broker.endSession(s, "process-exit"));
  return s;
}

/** Restores one device file and its mappings into s; returns how many mappings were dropped. */
function restoreDeviceFile(
  broker: Broker,
  store: StateStore,
  s: Session,
  d: DeviceFileRec,
  now: number,
): number {
  const recs = store.model.mappingsOf(d.id);
  const dev = broker.allDevices().find((x) => x.info.id === d.device);
  if (!dev) {
    store.append({ t: "df.close", id: d.id });
    broker.notify(s, {
      kind: "revocation",
      deviceFileId: BigInt(d.id),
      cookie: 0n,
      deviceId: d.device,
      reason: "device-gone",
      message: `device ${d.device} is not served by this brokerd any more`,
    });
    return recs.length;
  }
  const df = new DeviceFile(BigInt(d.id), s.id, dev.info, d.layout as Layout, broker.opts.pageSize);
  df.openedAt = d.openedAt;
  df.requestId = d.requestId;
  s.deviceFiles.set(df.id, df);
  broker.quotas.restore(s.quotaKeys, "deviceFiles", 1);
  s.remember(d.requestId, { deviceFileId: df.id });
  let dropped = 0;
  for (const rec of recs) {
    const m = restoreMapping(broker, store, s, df, rec, now);
    if (m) continue;
    dropped++;
    store.append({ t: "map.release", df: rec.df, cookie: rec.cookie });
    broker.notify(s, {
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

function restoreMapping(
  broker: Broker,
  store: StateStore,
  s: Session,
  df: DeviceFile,
  rec: MappingRec,
  now: number,
): Mapping | undefined {
  const region = df.device.regions.find((r) => r.index === rec.region);
  if (!region) return undefined;
  const offset = BigInt(rec.offset);
  const length = BigInt(rec.length);
  let backing: Backing;
  if (rec.state === "delivered") backing = deliveredBacking(rec);
  else {
    if (now >= rec.expiresAt || rec.ticket === "") return undefined;
    try {
      backing = broker.device(df.device.id).backend.openBacking({
        deviceId: df.device.id,
        region,
        offset,
        length,
        attribute: rec.requested,
        prot: rec.prot,
        allowFallback: rec.effective !== rec.requested,
        allowDeviceFd: rec.kind === "vfio-device-fd",
      });
    } catch {
      return undefined;
    }
    if (backing.effectiveAttribute !== rec.effective) {
      backing.release();
      return undefined;
    }
  }
  const m: Mapping = {
    cookie: BigInt(rec.cookie),
    deviceFile: df,
    region,
    regionOffset: offset,
    length,
    requestedAttribute: rec.requested,
    effectiveAttribute: rec.effective,
    fallbackReason: rec.fallbackReason,
    prot: rec.prot,
    backing,
    state: rec.state,
    ticket: rec.ticket,
    ticketExpiresAt: rec.expiresAt,
    rule: rec.rule,
    createdAt: rec.createdAt,
    requestId: rec.requestId,
    refs: rec.refs ?? 1,
  };
  const attrs = broker.attributeMap(df.device.id);
  try {
    attrs.check(region.index, region.name, offset, length, rec.effective);
    df.restoreMapping(m);
  } catch (e) {
    backing.release();
    throw new StateError(
      store.dir,
      `mapping ${rec.df}/${rec.cookie} conflicts with another recorded one (${(e as Error).message})`,
    );
  }
  attrs.acquire(region.index, offset, length, rec.effective);
  broker.quotas.restore(s.quotaKeys, "mappings", m.refs);
  broker.quotas.restore(s.quotaKeys, "bytes", length);
  // A pending mapping's ticket, or another reference's on a delivered one (it redelivers).
  if (rec.ticket !== "" && now < rec.expiresAt)
    broker.tickets.restore(rec.ticket, m, holderOf(s), rec.expiresAt);
  else m.ticket = "";
  if (rec.state === "pending") {
    broker.restorePending(s, m);
  }
  s.remember(rec.requestId, { cookie: m.cookie });
  return m;
}
