// Translation between the core's values and the protobuf messages of vfiobroker.v1. Nothing
// else in brokerd knows protobuf enum numbers.

import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  DeviceSchema,
  IdentitySchema,
  MappingSchema,
  RegionSchema,
  RevocationInfoSchema,
} from "@vfio-broker/proto";
import {
  Attribute as PbAttribute,
  BackingKind as PbBackingKind,
  DeviceHealth as PbDeviceHealth,
  DeviceMode as PbDeviceMode,
  Layout as PbLayout,
  MappingState as PbMappingState,
  Prot as PbProt,
  RevocationKind as PbRevocationKind,
} from "@vfio-broker/proto";
import type { CreateMappingArgs } from "../broker.js";
import type {
  Attribute,
  BackingKind,
  DeviceHealth,
  DeviceInfo,
  DeviceMode,
  Prot,
  RegionInfo,
} from "../devices/backend.js";
import { invalid } from "../errors.js";
import type { Mapping } from "../grants/device-file.js";
import type { Hold, RevocationView } from "../grants/holds.js";
import type { Layout } from "../grants/layout.js";
import { cgroupIdentityOf } from "../identity/container.js";
import type { PeerIdentity } from "../identity/peer.js";
import type { LeaseEvent } from "../identity/session.js";

const ATTR: Record<Attribute, PbAttribute> = { UC: PbAttribute.UC, WC: PbAttribute.WC, WB: PbAttribute.WB };
const BACKING: Record<BackingKind, PbBackingKind> = {
  dmabuf: PbBackingKind.DMABUF,
  "sysfs-wc": PbBackingKind.SYSFS_WC,
  sysfs: PbBackingKind.SYSFS,
  "vfio-device-fd": PbBackingKind.VFIO_DEVICE_FD,
  memfd: PbBackingKind.MEMFD,
};
const HEALTH: Record<DeviceHealth, PbDeviceHealth> = {
  healthy: PbDeviceHealth.HEALTHY,
  draining: PbDeviceHealth.DRAINING,
  gone: PbDeviceHealth.GONE,
};

const MODE: Record<DeviceMode, PbDeviceMode> = { "sysfs-wc": PbDeviceMode.SYSFS_WC, vfio: PbDeviceMode.VFIO };
/** Device.mode_notes: at most this many, each cut to MAX_MODE_NOTE_BYTES (as the proto says). */
export const MAX_MODE_NOTES = 16;
export const MAX_MODE_NOTE_BYTES = 512;

export const attributeToPb = (a: Attribute): PbAttribute => ATTR[a];
export const modeToPb = (m: DeviceMode): PbDeviceMode => MODE[m];

/** UNSPECIFIED and unknown numbers: INVALID_ARGUMENT naming the modes. */
export function modeFromPb(m: PbDeviceMode): DeviceMode {
  if (m === PbDeviceMode.SYSFS_WC) return "sysfs-wc";
  if (m === PbDeviceMode.VFIO) return "vfio";
  throw invalid(`mode ${m} is not one of DEVICE_MODE_SYSFS_WC (1), DEVICE_MODE_VFIO (2)`, "mode");
}

/** A note cut to MAX_MODE_NOTE_BYTES of UTF-8 (at a character boundary). */
function boundedNote(n: string): string {
  const b = Buffer.from(n, "utf8");
  return b.length <= MAX_MODE_NOTE_BYTES
    ? n
    : b
        .subarray(0, MAX_MODE_NOTE_BYTES)
        .toString("utf8")
        .replace(/\uFFFD$/, "");
}
export const backingToPb = (b: BackingKind): PbBackingKind => BACKING[b];
export const healthToPb = (h: DeviceHealth): PbDeviceHealth => HEALTH[h];
export const protToPb = (p: Prot): PbProt => (p === "rw" ? PbProt.READ_WRITE : PbProt.READ);
export const layoutToPb = (l: Layout): PbLayout => (l === "legacy" ? PbLayout.LEGACY : PbLayout.COMPACT);

/** undefined for UNSPECIFIED (the core says which field is missing); INVALID_ARGUMENT for unknown numbers. */
export function attributeFromPb(a: PbAttribute): Attribute | undefined {
  switch (a) {
    case PbAttribute.UNSPECIFIED:
      return undefined;
    case PbAttribute.UC:
      return "UC";
    case PbAttribute.WC:
      return "WC";
    case PbAttribute.WB:
      return "WB";
    default:
      throw invalid(
        `attribute ${a} is not one of ATTRIBUTE_UC (1), ATTRIBUTE_WC (2), ATTRIBUTE_WB (3)`,
        "attribute",
      );
  }
}

export function protFromPb(p: PbProt): Prot | undefined {
  switch (p) {
    case PbProt.UNSPECIFIED:
      return undefined;
    case PbProt.READ:
      return "r";
    case PbProt.READ_WRITE:
      return "rw";
    default:
      throw invalid(`prot ${p} is not one of PROT_READ (1), PROT_READ_WRITE (2)`, "prot");
  }
}

/** What CreateMappingRequest and the fd channel's FdGrant both carry -> the Broker's arguments. */
export function createMappingArgsFromPb(req: {
  deviceFileId: bigint;
  regionIndex: number;
  offset: bigint;
  length: bigint;
  attribute: PbAttribute;
  prot: PbProt;
  allowFallback: boolean;
  requestId?: string;
}): CreateMappingArgs {
  return {
    deviceFileId: req.deviceFileId,
    regionIndex: req.regionIndex,
    offset: req.offset,
    length: req.length,
    attribute: attributeFromPb(req.attribute),
    prot: protFromPb(req.prot),
    allowFallback: req.allowFallback,
    requestId: String(req.requestId ?? ""),
  };
}

export function layoutFromPb(l: PbLayout): Layout {
  switch (l) {
    case PbLayout.UNSPECIFIED:
    case PbLayout.COMPACT:
      return "compact";
    case PbLayout.LEGACY:
      return "legacy";
    default:
      throw invalid(`layout ${l} is not one of LAYOUT_LEGACY (1), LAYOUT_COMPACT (2)`, "layout");
  }
}

export function regionToPb(r: RegionInfo): MessageInitShape<typeof RegionSchema> {
  return {
    index: r.index,
    name: r.name,
    size: r.size,
    readable: r.readable,
    writable: r.writable,
    mappable: r.mappable,
    prefetchable: r.prefetchable,
    attributes: r.attributes.map(attributeToPb),
    sparseAreas: r.sparseAreas.map((a) => ({ offset: a.offset, size: a.size })),
  };
}

export function deviceToPb(d: DeviceInfo, health: DeviceHealth): MessageInitShape<typeof DeviceSchema> {
  return {
    id: d.id,
    backend: d.backend,
    vendorId: d.vendorId,
    deviceId: d.deviceId,
    description: d.description,
    regions: d.regions.map(regionToPb),
    health: healthToPb(health),
    mode: modeToPb(d.mode),
    modeNotes: d.modeNotes.slice(0, MAX_MODE_NOTES).map(boundedNote),
  };
}

export function identityToPb(id: PeerIdentity): MessageInitShape<typeof IdentitySchema> {
  // Container and pod only from a trusted cgroup (identity/cgroup-trust.ts); an untrusted name is not shown.
  const c = cgroupIdentityOf(id);
  return {
    uid: id.uid,
    gid: id.gid,
    pid: id.pid,
    cgroup: id.cgroup,
    pidfdSource: id.pidfdSource,
    containerId: c.containerId ?? "",
    containerRuntime: c.containerRuntime ?? "",
    podUid: c.podUid ?? "",
    qosClass: c.qosClass ?? "",
  };
}

export function revocationToPb(v: RevocationView): MessageInitShape<typeof RevocationInfoSchema> {
  return {
    kind: v.kind === "immediate" ? PbRevocationKind.IMMEDIATE : PbRevocationKind.UNMAP_REQUESTED,
    description: v.description,
    enforceable: v.enforceable,
    policyEnforce: v.policyEnforce,
    policyGraceMs: v.policyGraceMs,
    revokedReason: v.revokedReason,
    revokedUnixMs: BigInt(v.revokedAt),
    enforceAtUnixMs: BigInt(v.enforceAt),
    enforceBy: v.enforceBy,
    enforced: v.enforced,
    holderPid: v.holderPid,
  };
}

/** A hold as a Mapping in state REVOKING (admin listings). */
export function holdToPb(h: Hold, v: RevocationView): MessageInitShape<typeof MappingSchema> {
  return {
    cookie: h.cookie,
    deviceFileId: h.deviceFileId,
    deviceId: h.deviceId,
    regionIndex: h.regionIndex,
    regionName: h.regionName,
    regionOffset: h.offset,
    length: h.length,
    requestedAttribute: attributeToPb(h.attribute),
    effectiveAttribute: attributeToPb(h.attribute),
    fallbackReason: "",
    prot: protToPb(h.prot),
    backing: backingToPb(h.kind),
    state: PbMappingState.REVOKING,
    refs: h.refs,
    revocation: revocationToPb(v),
  };
}

export function mappingToPb(m: Mapping, revocation?: RevocationView): MessageInitShape<typeof MappingSchema> {
  return {
    ...(revocation ? { revocation: revocationToPb(revocation) } : {}),
    cookie: m.cookie,
    deviceFileId: m.deviceFile.id,
    deviceId: m.deviceFile.device.id,
    regionIndex: m.region.index,
    regionName: m.region.name,
    regionOffset: m.regionOffset,
    length: m.length,
    requestedAttribute: attributeToPb(m.requestedAttribute),
    effectiveAttribute: attributeToPb(m.effectiveAttribute),
    fallbackReason: m.fallbackReason,
    prot: protToPb(m.prot),
    backing: backingToPb(m.backing.kind),
    state: m.state === "delivered" ? PbMappingState.DELIVERED : PbMappingState.PENDING,
    refs: m.refs,
  };
}

/**
 * A revocation or health event of a session's lease, as the Lease stream and the workload
 * protocol both carry it (their messages share these fields); undefined for a keepalive ack,
 * which only the Lease stream says.
 */
export function leaseNoticeToPb(e: LeaseEvent) {
  switch (e.kind) {
    case "revocation":
      return {
        case: "revocation" as const,
        value: {
          deviceFileId: e.deviceFileId,
          cookie: e.cookie,
          deviceId: e.deviceId,
          reason: e.reason,
          message: e.message,
        },
      };
    case "device_health":
      return { case: "deviceHealth" as const, value: { deviceId: e.deviceId, health: healthToPb(e.health) } };
    default:
      return undefined;
  }
}
