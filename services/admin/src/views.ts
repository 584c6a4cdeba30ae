// The REST API's JSON shapes: a JSON schema for each resource (it drives validation, serialization
// and the OpenAPI document) and the function that builds it from brokerd's protobuf message.
// uint64 values (cookies, offsets, sizes, ids, timestamps) are decimal strings (docs/design.md §3);
// enums are lower-case words ("WC", "delivered", "healthy"), never protobuf numbers.
import {
  Attribute,
  BackingKind,
  type Device,
  type DeviceFileInfo,
  DeviceHealth,
  DeviceMode,
  type GetHealthResponse,
  type Identity,
  Layout,
  type Mapping,
  type MappingInfo,
  MappingState,
  Prot,
  type Region,
  RevocationKind,
  type RevokeCounts,
  type Session,
  type TreeEntry,
} from "@vfio-broker/proto";
import { HttpError } from "./brokerd.js";
import { quoted } from "./quote.js";

// ---- shared pieces -------------------------------------------------------------------------------

export const UINT64_PATTERN = "^(0|[1-9][0-9]{0,19})$";
const u64 = (description: string) =>
  ({
    type: "string",
    pattern: UINT64_PATTERN,
    description: `${description} (uint64, decimal string)`,
  }) as const;

/** Device ids: a BDF ("0000:3b:00.0") or a simulated device's name ("sim0"). */
export const DEVICE_ID = {
  type: "string",
  pattern: "^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$",
  description: 'Device id: a PCI BDF such as "0000:3b:00.0", or a simulated device name such as "sim0"',
} as const;
export const SESSION_ID = {
  type: "string",
  pattern: "^[0-9a-f]{16}$",
  description: "Session id (16 hex digits, from GET /api/v1/sessions)",
} as const;
export const DEVICE_FILE_ID = {
  type: "string",
  pattern: "^[1-9][0-9]{0,19}$",
  description: "DeviceFile id (uint64, decimal string, from GET /api/v1/device-files)",
} as const;
export const COOKIE = u64("Mapping cookie: its start offset in the DeviceFile's space");
export const REASON_BODY = {
  type: "object",
  additionalProperties: false,
  properties: {
    reason: {
      type: "string",
      maxLength: 200,
      description: "Why; sent to the client with the revocation and audited",
    },
  },
} as const;

/** Body of a revocation of a mapping or session: a reason, and optionally its enforcement. */
export const REVOKE_BODY = {
  type: "object",
  additionalProperties: false,
  properties: {
    ...REASON_BODY.properties,
    enforce: {
      type: "boolean",
      description:
        "Kill a holder that still holds the mapping after graceMs (SIGKILL through its pidfd). Without it the holder is only asked to unmap, and its pages stay booked until it releases them or exits",
    },
    graceMs: {
      type: "integer",
      minimum: 0,
      maximum: 3600000,
      description: "With enforce: ms to wait (default 0)",
    },
  },
} as const;

export type RevokeBody = { reason?: string; enforce?: boolean; graceMs?: number } | undefined;

/** Body of actions that take no options: nothing, or {}. */
export const EMPTY_BODY = { type: "object", additionalProperties: false, properties: {} } as const;

export const ERROR = {
  type: "object",
  required: ["statusCode", "error", "message"],
  properties: {
    statusCode: { type: "integer" },
    error: { type: "string" },
    message: { type: "string", description: "What went wrong and what to change" },
    errors: { type: "array", items: { type: "string" } },
  },
} as const;

/** The error responses every /api route may give (with its own 2xx schema added). */
export function responses(ok: object, okCode = 200, extra: number[] = []): Record<number, object> {
  const out: Record<number, object> = { [okCode]: ok, 401: ERROR, 503: ERROR };
  for (const code of [400, ...extra]) out[code] = ERROR;
  return out;
}

/** BigInt that fits uint64, or a 400 saying so (the pattern already guarantees digits only). */
export function parseU64(name: string, value: string): bigint {
  const v = BigInt(value);
  if (v > 0xffff_ffff_ffff_ffffn)
    throw new HttpError(
      400,
      `${name} ${quoted(value)} does not fit in 64 bits; the largest uint64 is 18446744073709551615`,
    );
  return v;
}

// ---- enums ---------------------------------------------------------------------------------------

const ATTRIBUTE: Record<number, string> = {
  [Attribute.UC]: "UC",
  [Attribute.WC]: "WC",
  [Attribute.WB]: "WB",
};
const PROT: Record<number, string> = { [Prot.READ]: "r", [Prot.READ_WRITE]: "rw" };
const LAYOUT: Record<number, string> = { [Layout.LEGACY]: "legacy", [Layout.COMPACT]: "compact" };
const BACKING: Record<number, string> = {
  [BackingKind.DMABUF]: "dmabuf",
  [BackingKind.SYSFS_WC]: "sysfs-wc",
  [BackingKind.SYSFS]: "sysfs",
  [BackingKind.VFIO_DEVICE_FD]: "vfio-device-fd",
  [BackingKind.MEMFD]: "memfd",
};
const HEALTH: Record<number, string> = {
  [DeviceHealth.HEALTHY]: "healthy",
  [DeviceHealth.DRAINING]: "draining",
  [DeviceHealth.GONE]: "gone",
};
const MODE: Record<number, string> = {
  [DeviceMode.SYSFS_WC]: "sysfs-wc",
  [DeviceMode.VFIO]: "vfio",
};
/** The REST names of the modes and their API numbers (POST /devices/:id/mode). */
export const MODE_NUMBER: Record<string, DeviceMode> = {
  "sysfs-wc": DeviceMode.SYSFS_WC,
  vfio: DeviceMode.VFIO,
};
export const modeName = (m: number) => name(MODE, m);
const STATE: Record<number, string> = {
  [MappingState.PENDING]: "pending",
  [MappingState.DELIVERED]: "delivered",
  [MappingState.REVOKING]: "revoking",
};
const REVOCATION_KIND: Record<number, string> = {
  [RevocationKind.IMMEDIATE]: "immediate",
  [RevocationKind.UNMAP_REQUESTED]: "unmap-requested",
};
const name = (table: Record<number, string>, v: number) => table[v] ?? "unspecified";

const ATTRIBUTE_SCHEMA = { type: "string", enum: ["UC", "WC", "WB", "unspecified"] } as const;

// ---- devices -------------------------------------------------------------------------------------

export const REGION = {
  type: "object",
  properties: {
    index: { type: "integer", description: "VFIO region index: 0-5 BARs, 6 ROM, 7 CONFIG, 8 VGA" },
    name: { type: "string" },
    size: u64("Size in bytes"),
    readable: { type: "boolean" },
    writable: { type: "boolean" },
    mappable: { type: "boolean" },
    prefetchable: { type: "boolean" },
    attributes: { type: "array", items: ATTRIBUTE_SCHEMA, description: "Attributes a mapping can get" },
    sparseAreas: {
      type: "array",
      items: { type: "object", properties: { offset: u64("Offset in the region"), size: u64("Bytes") } },
    },
  },
} as const;

export const regionView = (r: Region) => ({
  index: r.index,
  name: r.name,
  size: r.size.toString(),
  readable: r.readable,
  writable: r.writable,
  mappable: r.mappable,
  prefetchable: r.prefetchable,
  attributes: r.attributes.map((a) => name(ATTRIBUTE, a)),
  sparseAreas: r.sparseAreas.map((s) => ({ offset: s.offset.toString(), size: s.size.toString() })),
});

export const DEVICE = {
  type: "object",
  properties: {
    id: DEVICE_ID,
    backend: { type: "string", description: "sim, sysfs or vfio" },
    vendorId: { type: "integer" },
    deviceId: { type: "integer" },
    description: { type: "string" },
    health: { type: "string", enum: ["healthy", "draining", "gone", "unspecified"] },
    regions: { type: "array", items: REGION },
    mode: {
      type: "string",
      enum: ["sysfs-wc", "vfio", "unspecified"],
      description:
        "sysfs-wc: never opened through VFIO (resourceN/resourceN_wc fds); vfio: brokerd holds a VFIO device fd",
    },
    modeNotes: {
      type: "array",
      items: { type: "string" },
      description: "What the kernel probe found this mode cannot give here, and why",
    },
  },
} as const;

export const deviceView = (d: Device) => ({
  id: d.id,
  backend: d.backend,
  vendorId: d.vendorId,
  deviceId: d.deviceId,
  description: d.description,
  health: name(HEALTH, d.health),
  regions: d.regions.map(regionView),
  mode: name(MODE, d.mode),
  modeNotes: d.modeNotes,
});

// ---- sessions ------------------------------------------------------------------------------------

export const IDENTITY = {
  type: "object",
  description: "Identity as the kernel reported it (SO_PEERCRED, SO_PEERPIDFD, /proc/PID/cgroup)",
  properties: {
    uid: { type: "integer" },
    gid: { type: "integer" },
    pid: { type: "integer" },
    cgroup: { type: "string" },
    pidfdSource: { type: "string" },
    containerId: {
      type: "string",
      description:
        "64-hex container id read from the cgroup path, or empty (also when a user could have made that cgroup: docs/security.md)",
    },
    containerRuntime: {
      type: "string",
      description: "docker, podman, containerd, cri-o, kubepods (a bare id under a pod), or empty",
    },
    podUid: {
      type: "string",
      description: "Kubernetes pod UID read from the cgroup path, or empty (on the same condition)",
    },
    qosClass: {
      type: "string",
      description: "the pod's QoS class: guaranteed, burstable, besteffort, or empty",
    },
  },
} as const;

export const identityView = (i: Identity | undefined) =>
  i
    ? {
        uid: i.uid,
        gid: i.gid,
        pid: i.pid,
        cgroup: i.cgroup,
        pidfdSource: i.pidfdSource,
        containerId: i.containerId,
        containerRuntime: i.containerRuntime,
        podUid: i.podUid,
        qosClass: i.qosClass,
      }
    : undefined;

export const SESSION = {
  type: "object",
  properties: {
    sessionId: SESSION_ID,
    identity: IDENTITY,
    connectedUnixMs: u64("Connection time, ms since the epoch"),
    clientName: { type: "string" },
    deviceFiles: { type: "integer" },
    mappings: { type: "integer" },
    bytesMapped: u64("Bytes mapped by the session's live mappings"),
    leaseActive: { type: "boolean" },
  },
} as const;

export const sessionView = (s: Session) => ({
  sessionId: s.sessionId,
  identity: identityView(s.identity),
  connectedUnixMs: s.connectedUnixMs.toString(),
  clientName: s.clientName,
  deviceFiles: s.deviceFiles,
  mappings: s.mappings,
  bytesMapped: s.bytesMapped.toString(),
  leaseActive: s.leaseActive,
});

// ---- device files and mappings -------------------------------------------------------------------

export const DEVICE_FILE = {
  type: "object",
  properties: {
    deviceFileId: DEVICE_FILE_ID,
    sessionId: SESSION_ID,
    deviceId: DEVICE_ID,
    layout: { type: "string", enum: ["legacy", "compact", "unspecified"] },
    mappings: { type: "integer" },
    openedUnixMs: u64("Open time, ms since the epoch"),
  },
} as const;

export const deviceFileView = (f: DeviceFileInfo | undefined) =>
  f && {
    deviceFileId: f.deviceFileId.toString(),
    sessionId: f.sessionId,
    deviceId: f.deviceId,
    layout: name(LAYOUT, f.layout),
    mappings: f.mappings,
    openedUnixMs: f.openedUnixMs.toString(),
  };

export const MAPPING = {
  type: "object",
  properties: {
    cookie: COOKIE,
    deviceFileId: DEVICE_FILE_ID,
    deviceId: DEVICE_ID,
    regionIndex: { type: "integer" },
    regionName: { type: "string" },
    regionOffset: u64("Offset of the mapped range in the region"),
    length: u64("Bytes"),
    requestedAttribute: ATTRIBUTE_SCHEMA,
    effectiveAttribute: ATTRIBUTE_SCHEMA,
    fallbackReason: { type: "string" },
    prot: { type: "string", enum: ["r", "rw", "unspecified"] },
    backing: {
      type: "string",
      enum: ["dmabuf", "sysfs-wc", "sysfs", "vfio-device-fd", "memfd", "unspecified"],
    },
    state: {
      type: "string",
      enum: ["pending", "delivered", "revoking", "unspecified"],
      description:
        "revoking: revoked, but its holder has not unmapped it; its pages stay booked until the holder releases it or exits",
    },
    refs: { type: "integer", description: "CreateMapping references held on the cookie" },
    revocation: {
      type: "object",
      description: "What a revocation of this mapping does, and where a revoked one stands",
      properties: {
        kind: {
          type: "string",
          enum: ["immediate", "unmap-requested", "unspecified"],
          description:
            "immediate: no fd of it left brokerd, a revocation frees its pages at once; unmap-requested: the holder is asked to unmap, the pages stay booked until it releases them or exits",
        },
        description: { type: "string" },
        enforceable: { type: "boolean", description: "brokerd can kill the holder (revoke with enforce)" },
        policyEnforce: { type: "string", description: "The granting rule's revoke.enforce: none or kill" },
        policyGraceMs: { type: "integer" },
        revokedReason: { type: "string" },
        revokedUnixMs: { type: "integer" },
        enforceAtUnixMs: { type: "integer", description: "When brokerd kills the holder (0: never)" },
        enforceBy: { type: "string" },
        enforced: { type: "boolean", description: "SIGKILL was sent" },
        holderPid: { type: "integer" },
      },
    },
    sessionId: SESSION_ID,
    identity: IDENTITY,
  },
} as const;

export const mappingView = (info: MappingInfo) => {
  const m = info.mapping as Mapping;
  return {
    cookie: m.cookie.toString(),
    deviceFileId: m.deviceFileId.toString(),
    deviceId: m.deviceId,
    regionIndex: m.regionIndex,
    regionName: m.regionName,
    regionOffset: m.regionOffset.toString(),
    length: m.length.toString(),
    requestedAttribute: name(ATTRIBUTE, m.requestedAttribute),
    effectiveAttribute: name(ATTRIBUTE, m.effectiveAttribute),
    fallbackReason: m.fallbackReason,
    prot: name(PROT, m.prot),
    backing: name(BACKING, m.backing),
    state: name(STATE, m.state),
    refs: m.refs,
    revocation: m.revocation
      ? {
          kind: name(REVOCATION_KIND, m.revocation.kind),
          description: m.revocation.description,
          enforceable: m.revocation.enforceable,
          policyEnforce: m.revocation.policyEnforce,
          policyGraceMs: m.revocation.policyGraceMs,
          revokedReason: m.revocation.revokedReason,
          revokedUnixMs: Number(m.revocation.revokedUnixMs),
          enforceAtUnixMs: Number(m.revocation.enforceAtUnixMs),
          enforceBy: m.revocation.enforceBy,
          enforced: m.revocation.enforced,
          holderPid: m.revocation.holderPid,
        }
      : undefined,
    sessionId: info.sessionId,
    identity: identityView(info.identity),
  };
};

export const TREE_ENTRY = {
  type: "object",
  properties: {
    start: u64("First offset"),
    last: u64("Last offset, inclusive"),
    kind: { type: "string", enum: ["region", "mapping"] },
    regionIndex: { type: "integer" },
    regionName: { type: "string" },
    attribute: ATTRIBUTE_SCHEMA,
    state: { type: "string", enum: ["pending", "delivered", "unspecified"] },
  },
} as const;

export const treeEntryView = (e: TreeEntry) => ({
  start: e.start.toString(),
  last: e.last.toString(),
  kind: e.kind,
  regionIndex: e.regionIndex,
  regionName: e.regionName,
  attribute: name(ATTRIBUTE, e.attribute),
  state: name(STATE, e.state),
});

// ---- health and revocations ----------------------------------------------------------------------

export const HEALTH_SCHEMA = {
  type: "object",
  properties: {
    status: { type: "string", description: '"SERVING" or "DRAINING"' },
    version: { type: "string" },
    startedUnixMs: u64("brokerd start time, ms since the epoch"),
    sessions: { type: "integer" },
    deviceFiles: { type: "integer" },
    mappings: { type: "integer" },
    policy: {
      type: "object",
      properties: { source: { type: "string" }, digest: { type: "string" }, rules: { type: "integer" } },
    },
    backends: { type: "array", items: { type: "string" } },
  },
} as const;

export const healthView = (h: GetHealthResponse) => ({
  status: h.status,
  version: h.version,
  startedUnixMs: h.startedUnixMs.toString(),
  sessions: h.sessions,
  deviceFiles: h.deviceFiles,
  mappings: h.mappings,
  policy: { source: h.policySource, digest: h.policyDigest, rules: h.policyRules },
  backends: h.backends,
});

export const REVOKED = {
  type: "object",
  properties: {
    revoked: {
      type: "object",
      properties: {
        mappingsRevoked: { type: "integer" },
        deviceFilesClosed: { type: "integer" },
        sessionsEnded: { type: "integer" },
        mappingsHeld: {
          type: "integer",
          description:
            "Of the mappings revoked, those whose holder may still map them: their pages stay booked (state revoking) until it releases them or exits",
        },
      },
    },
  },
} as const;

export const revokedView = (c: RevokeCounts | undefined) => ({
  revoked: {
    mappingsRevoked: c?.mappingsRevoked ?? 0,
    deviceFilesClosed: c?.deviceFilesClosed ?? 0,
    sessionsEnded: c?.sessionsEnded ?? 0,
    mappingsHeld: c?.mappingsHeld ?? 0,
  },
});
