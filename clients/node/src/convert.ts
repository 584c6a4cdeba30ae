// convert.ts: owns the translation between the generated protobuf enums/messages and the client's
// plain types (lower-case attribute names, bigint sizes and cookies). No I/O.
import {
  Attribute,
  BackingKind,
  DeviceHealth,
  Layout,
  type Device as PbDevice,
  type Region as PbRegion,
  Prot,
} from "@vfio-broker/proto/messages";

export type AttributeName = "uc" | "wc" | "wb";
export type ProtName = "r" | "rw";
export type LayoutName = "legacy" | "compact";
export type BackingName = "dmabuf" | "sysfs-wc" | "sysfs" | "vfio-device-fd" | "memfd" | "unspecified";
export type HealthName = "healthy" | "draining" | "gone" | "unspecified";

export interface RegionInfo {
  /** VFIO region index: 0-5 BAR0-BAR5, 6 ROM, 7 CONFIG, 8 VGA. */
  index: number;
  name: string;
  size: bigint;
  readable: boolean;
  writable: boolean;
  mappable: boolean;
  prefetchable: boolean;
  /** Attributes this host can give for a mapping of this region. */
  attributes: AttributeName[];
  sparseAreas: { offset: bigint; size: bigint }[];
}

/** A region as a DeviceFile sees it: with its compat cookie in the device file's offset space. */
export interface DeviceFileRegion extends RegionInfo {
  cookie: bigint;
}

export interface DeviceInfo {
  id: string;
  backend: string;
  vendorId: number;
  deviceId: number;
  description: string;
  health: HealthName;
  regions: RegionInfo[];
}

export function attributeToPb(a: AttributeName): Attribute {
  switch (a) {
    case "uc":
      return Attribute.UC;
    case "wc":
      return Attribute.WC;
    case "wb":
      return Attribute.WB;
  }
  throw new RangeError(`attribute must be "uc", "wc" or "wb", got ${JSON.stringify(a)}`);
}

export function attributeFromPb(a: Attribute): AttributeName | "unspecified" {
  switch (a) {
    case Attribute.UC:
      return "uc";
    case Attribute.WC:
      return "wc";
    case Attribute.WB:
      return "wb";
    default:
      return "unspecified";
  }
}

export function protToPb(p: ProtName): Prot {
  if (p === "r") return Prot.READ;
  if (p === "rw") return Prot.READ_WRITE;
  throw new RangeError(`prot must be "r" or "rw", got ${JSON.stringify(p)}`);
}

export function protFromPb(p: Prot): ProtName {
  return p === Prot.READ ? "r" : "rw";
}

export function layoutToPb(l: LayoutName | undefined): Layout {
  if (l === undefined) return Layout.UNSPECIFIED;
  if (l === "legacy") return Layout.LEGACY;
  if (l === "compact") return Layout.COMPACT;
  throw new RangeError(`layout must be "legacy" or "compact", got ${JSON.stringify(l)}`);
}

export function layoutFromPb(l: Layout): LayoutName {
  return l === Layout.LEGACY ? "legacy" : "compact";
}

export function backingFromPb(b: BackingKind): BackingName {
  switch (b) {
    case BackingKind.DMABUF:
      return "dmabuf";
    case BackingKind.SYSFS_WC:
      return "sysfs-wc";
    case BackingKind.SYSFS:
      return "sysfs";
    case BackingKind.VFIO_DEVICE_FD:
      return "vfio-device-fd";
    case BackingKind.MEMFD:
      return "memfd";
    default:
      return "unspecified";
  }
}

export function healthFromPb(h: DeviceHealth): HealthName {
  switch (h) {
    case DeviceHealth.HEALTHY:
      return "healthy";
    case DeviceHealth.DRAINING:
      return "draining";
    case DeviceHealth.GONE:
      return "gone";
    default:
      return "unspecified";
  }
}

export function regionFromPb(r: PbRegion): RegionInfo {
  return {
    index: r.index,
    name: r.name,
    size: r.size,
    readable: r.readable,
    writable: r.writable,
    mappable: r.mappable,
    prefetchable: r.prefetchable,
    attributes: r.attributes.map(attributeFromPb).filter((a): a is AttributeName => a !== "unspecified"),
    sparseAreas: r.sparseAreas.map((a) => ({ offset: a.offset, size: a.size })),
  };
}

export function deviceFromPb(d: PbDevice): DeviceInfo {
  return {
    id: d.id,
    backend: d.backend,
    vendorId: d.vendorId,
    deviceId: d.deviceId,
    description: d.description,
    health: healthFromPb(d.health),
    regions: d.regions.map(regionFromPb),
  };
}

/**
 * Finds a region by index (2), index string ("2") or name, case-insensitively ("BAR2", "bar2", "rom").
 * Returns undefined when nothing matches.
 */
export function findRegion<R extends RegionInfo>(
  regions: readonly R[],
  spec: string | number,
): R | undefined {
  if (typeof spec === "number") return regions.find((r) => r.index === spec);
  const s = spec.trim();
  if (/^\d+$/.test(s)) return regions.find((r) => r.index === Number(s));
  const lower = s.toLowerCase();
  return regions.find((r) => r.name.toLowerCase() === lower);
}
