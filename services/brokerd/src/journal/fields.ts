// The fields journal lines share, built from the Broker's objects: a mapping's, a hold's, a peer's,
// a session's kernel-verified identity, and a mapping's low-cardinality description for summary
// tallies. Field names use the design's vocabulary. Pure: reads, never writes, no I/O.
import type { Broker, FdPeer } from "../broker.js";
import type { Mapping } from "../grants/device-file.js";
import type { Hold } from "../grants/holds.js";

export const mappingFields = (m: Mapping) => ({
  session: m.deviceFile.sessionId,
  deviceFile: m.deviceFile.id,
  device: m.deviceFile.device.id,
  region: m.region.name,
  cookie: m.cookie,
  regionOffset: m.regionOffset,
  length: m.length,
  requested: m.requestedAttribute,
  effective: m.effectiveAttribute,
  prot: m.prot,
  backing: m.backing.kind,
  deviceFd: m.backing.kind === "vfio-device-fd",
  rule: m.rule,
});

/** A mapping as summaries tally it: device, region, attribute, backing. */
export const mappingDetail = (m: Mapping) =>
  `${m.deviceFile.device.id} ${m.region.name} ${m.effectiveAttribute} ${m.backing.kind}`;

export const holdFields = (h: Hold) => ({
  hold: h.id,
  session: h.sessionId,
  deviceFile: h.deviceFileId,
  cookie: h.cookie,
  device: h.deviceId,
  region: h.regionName,
  regionOffset: h.offset,
  length: h.length,
  attribute: h.attribute,
  backing: h.kind,
  uid: h.uid,
  pid: h.pid,
  reason: h.reason,
  ...(h.enforceAt > 0 ? { enforceAt: h.enforceAt, enforceBy: h.enforceBy } : {}),
});

export const peerFields = (p: FdPeer | undefined) => (p ? { uid: p.uid, pid: p.pid } : {});

/** The kernel-verified uid and pid of a session, by its id ("unknown" once it is gone). */
export function whose(broker: Broker, sessionId: string): { uid: number | string; pid: number | undefined } {
  const id = broker.sessions?.get(sessionId)?.identity;
  return id ? { uid: id.uid, pid: id.pid } : { uid: "unknown", pid: undefined };
}
