// The one definition of each record's fields: the live objects (Session, DeviceFile, Mapping, Hold)
// to their state records (state/records.ts) for the ledger, and back for the restore. The replay
// (state/model.ts) applies the same records. Pure: no I/O.
import type { Backing } from "../devices/backend.js";
import type { DeviceFile, Mapping } from "../grants/device-file.js";
import type { Hold } from "../grants/holds.js";
import type { Session } from "../identity/session.js";
import type { DeviceFileRec, HoldRec, MappingRec, SessionRec } from "./records.js";

export function sessionRec(s: Session): SessionRec {
  const id = s.identity;
  return {
    id: s.id,
    tokenHash: s.tokenHash,
    uid: id.uid,
    gid: id.gid,
    pid: id.pid,
    startTime: id.startTime,
    cgroup: id.cgroup,
    groups: id.groups,
    pidfdSource: id.pidfdSource,
    clientName: s.clientName,
    openedAt: s.connectedAt,
  };
}

export function deviceFileRec(df: DeviceFile): DeviceFileRec {
  return {
    id: String(df.id),
    session: df.sessionId,
    device: df.device.id,
    layout: df.layout,
    openedAt: df.openedAt,
    requestId: df.requestId,
  };
}

export function mappingRec(m: Mapping): MappingRec {
  return {
    df: String(m.deviceFile.id),
    cookie: String(m.cookie),
    region: m.region.index,
    offset: String(m.regionOffset),
    length: String(m.length),
    requested: m.requestedAttribute,
    effective: m.effectiveAttribute,
    fallbackReason: m.fallbackReason,
    prot: m.prot,
    kind: m.backing.kind,
    state: m.state,
    // The live ticket (a redeemed one is cleared): pending, or another reference's.
    ticket: m.ticket,
    expiresAt: m.ticketExpiresAt,
    rule: m.rule,
    requestId: m.requestId,
    createdAt: m.createdAt,
    refs: m.refs,
  };
}

/** A recorded mapping back to a Mapping of df, with the backing the restore made (or none). */
export function mappingOf(rec: MappingRec, df: DeviceFile, backing: Backing): Mapping {
  const region = df.region(rec.region);
  return {
    cookie: BigInt(rec.cookie),
    deviceFile: df,
    region,
    regionOffset: BigInt(rec.offset),
    length: BigInt(rec.length),
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
}

export function holdRec(h: Hold): HoldRec {
  return {
    id: h.id,
    pid: h.pid,
    startTime: h.startTime,
    uid: h.uid,
    session: h.sessionId,
    df: String(h.deviceFileId),
    cookie: String(h.cookie),
    device: h.deviceId,
    region: h.regionIndex,
    regionName: h.regionName,
    offset: String(h.offset),
    length: String(h.length),
    attribute: h.attribute,
    prot: h.prot,
    kind: h.kind,
    refs: h.refs,
    quotaKeys: h.quotaKeys,
    rule: h.rule,
    reason: h.reason,
    since: h.since,
    enforceAt: h.enforceAt,
    enforceBy: h.enforceBy,
  };
}

export function holdOf(r: HoldRec): Hold {
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
