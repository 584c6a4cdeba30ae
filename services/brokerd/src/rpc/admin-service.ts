// AdminService handlers (admin socket: root or the admin group only). Thin translation over the
// Broker's admin operations; the REST console in services/admin is a client of this.
import type * as grpc from "@grpc/grpc-js";
import { MappingState as PbMappingState } from "@vfio-broker/proto";
import { type Broker, VERSION } from "../broker.js";
import type { SimBackend } from "../devices/sim.js";
import { invalid, precondition } from "../errors.js";
import type { DeviceFile } from "../grants/device-file.js";
import { heldRevocation } from "../grants/holds.js";
import type { Session } from "../identity/session.js";
import {
  attributeToPb,
  deviceToPb,
  holdToPb,
  identityToPb,
  layoutToPb,
  mappingToPb,
  modeFromPb,
  modeToPb,
} from "./convert.js";
import { unary } from "./status.js";

export interface AdminHooks {
  /** Throws unless the call's connection was admitted as an administrator (checked on every call). */
  authorize(call: { getPeer(): string }): void;
  reloadPolicy(): { ok: boolean; errors: string[] };
  sim: SimBackend | undefined;
  draining(): boolean;
}

function deviceFileInfo(df: DeviceFile) {
  return {
    deviceFileId: df.id,
    sessionId: df.sessionId,
    deviceId: df.device.id,
    layout: layoutToPb(df.layout),
    mappings: df.mappings.size,
    openedUnixMs: BigInt(df.openedAt),
  };
}

function sessionInfo(s: Session) {
  let bytes = 0n;
  for (const df of s.deviceFiles.values()) for (const m of df.mappings.values()) bytes += m.length;
  return {
    sessionId: s.id,
    identity: identityToPb(s.identity),
    connectedUnixMs: BigInt(s.connectedAt),
    clientName: s.clientName,
    deviceFiles: s.deviceFiles.size,
    mappings: s.mappingCount,
    bytesMapped: bytes,
    leaseActive: !!s.lease,
  };
}

const counts = (c: {
  mappingsRevoked: number;
  deviceFilesClosed: number;
  sessionsEnded: number;
  mappingsHeld?: number;
}) => ({
  revoked: { ...c, mappingsHeld: c.mappingsHeld ?? 0 },
});

const MAX_GRACE_MS = 3_600_000;

/** The operator's enforcement of a revocation (enforce, grace_ms), checked. */
function enforcement(req: { enforce?: boolean; graceMs?: number }): { graceMs: number } | undefined {
  if (!req.enforce) {
    if (req.graceMs)
      throw invalid("grace_ms is only meaningful with enforce: set enforce, or leave grace_ms 0", "grace_ms");
    return undefined;
  }
  const graceMs = req.graceMs ?? 0;
  if (graceMs > MAX_GRACE_MS)
    throw invalid(`grace_ms ${graceMs} is over ${MAX_GRACE_MS} (one hour)`, "grace_ms");
  return { graceMs };
}

// biome-ignore lint/suspicious/noExplicitAny: requests are typed by the generated schemas
type Any = any;
/** A handler for one AdminService method, authorized on every call. */
type Handle = <O>(fn: (req: Any) => O) => grpc.handleUnaryCall<Any, O>;

/** Every device file, of one session and one device if the request names them. */
function deviceFilesOf(broker: Broker, req: { sessionId?: string; deviceId?: string }): DeviceFile[] {
  return [...broker.sessions.values()]
    .filter((s) => !req.sessionId || s.id === req.sessionId)
    .flatMap((s) => [...s.deviceFiles.values()])
    .filter((df) => !req.deviceId || df.device.id === req.deviceId);
}

/** Every mapping (live, and revoked ones their holders have not unmapped yet), as ListMappings says them. */
function mappingsOf(broker: Broker, req: { sessionId?: string; deviceId?: string }) {
  return deviceFilesOf(broker, req)
    .flatMap((df) => {
      const s = broker.sessions.get(df.sessionId);
      return [...df.mappings.values()].map((m) => ({
        mapping: mappingToPb(m, broker.revocationOf(m)),
        sessionId: df.sessionId,
        identity: s ? identityToPb(s.identity) : undefined,
      }));
    })
    .concat(
      // Revoked mappings their holders have not unmapped yet (state REVOKING).
      [...broker.holds.all()]
        .filter(
          (h) =>
            (!req.sessionId || h.sessionId === req.sessionId) &&
            (!req.deviceId || h.deviceId === req.deviceId),
        )
        .map((h) => ({
          mapping: holdToPb(h, heldRevocation(h)),
          sessionId: h.sessionId,
          identity: { uid: h.uid, pid: h.pid },
        })),
    );
}

/** A device file's tree, entry by entry and as JSON (DumpDeviceFile). */
function dumpOf(df: DeviceFile) {
  const tree = df.treeView();
  const entries = [...tree.entries()].map((e) =>
    e.entry.kind === "held"
      ? {
          start: e.start,
          last: e.last,
          kind: "held",
          regionIndex: e.entry.region.index,
          regionName: e.entry.region.name,
        }
      : e.entry.kind === "region"
        ? {
            start: e.start,
            last: e.last,
            kind: "region",
            regionIndex: e.entry.region.index,
            regionName: e.entry.region.name,
          }
        : {
            start: e.start,
            last: e.last,
            kind: "mapping",
            regionIndex: e.entry.mapping.region.index,
            regionName: e.entry.mapping.region.name,
            attribute: attributeToPb(e.entry.mapping.effectiveAttribute),
            state: e.entry.mapping.state === "delivered" ? PbMappingState.DELIVERED : PbMappingState.PENDING,
          },
  );
  return {
    deviceFile: deviceFileInfo(df),
    entries,
    nodesJson: JSON.stringify(tree.dump(), (_k, v) => {
      if (typeof v === "bigint") return v.toString();
      // Tree entries hold live objects (regions, mappings with fds); show only what they are.
      if (v && typeof v === "object" && "kind" in v && ["region", "mapping", "held"].includes(v.kind))
        return v.kind === "region"
          ? { region: v.region.name }
          : v.kind === "held"
            ? { held: String(v.cookie) }
            : { mapping: String(v.mapping.cookie) };
      return v;
    }),
    depth: tree.depth,
  };
}

/** Health and listings: what brokerd serves, its devices, sessions, device files, mappings. */
function listings(broker: Broker, hooks: AdminHooks, h: Handle) {
  return {
    getHealth: h(() => {
      const dfs = deviceFilesOf(broker, {});
      return {
        status: hooks.draining() ? "DRAINING" : "SERVING",
        version: VERSION,
        startedUnixMs: BigInt(broker.startedAt),
        sessions: broker.sessions.size,
        deviceFiles: dfs.length,
        mappings: dfs.reduce((n, df) => n + df.mappings.size, 0),
        policySource: broker.policy.source,
        policyDigest: broker.policy.digest,
        policyRules: broker.policy.rules.length,
        backends: broker.opts.backends.map((b) => b.name),
      };
    }),
    listAllDevices: h(() => ({ devices: broker.allDevices().map((d) => deviceToPb(d.info, d.health)) })),
    listSessions: h(() => ({ sessions: [...broker.sessions.values()].map(sessionInfo) })),
    listDeviceFiles: h((req) => ({ deviceFiles: deviceFilesOf(broker, req).map(deviceFileInfo) })),
    listMappings: h((req) => ({ mappings: mappingsOf(broker, req) })),
  };
}

/** Looking inside: a device file's tree, a mapping's attribute as the page tables have it. */
function inspection(broker: Broker, h: Handle) {
  return {
    dumpDeviceFile: h((req) => dumpOf(broker.findDeviceFile(req.deviceFileId).df)),
    verifyMappingAttribute: h((req) => {
      const { mapping, check } = broker.verifyMappingAttribute(req.deviceFileId, req.cookie);
      return {
        effectiveAttribute: attributeToPb(mapping.effectiveAttribute),
        physStart: check.physStart,
        length: check.length,
        patTypes: check.patTypes,
        observed: check.attributes.map(attributeToPb),
        consistent:
          check.unavailable === "" &&
          check.attributes.length === 1 &&
          check.attributes[0] === mapping.effectiveAttribute,
        unavailable: check.unavailable,
      };
    }),
  };
}

/** SetDeviceMode's reason, for the journal: at most 256 bytes (as the proto says). */
function boundedReason(r: string): string {
  if (Buffer.byteLength(r, "utf8") > 256) throw invalid("reason is longer than 256 bytes", "reason");
  return r;
}

/** What an operator ends or changes: revocations, drains, modes, the policy. */
function revocations(broker: Broker, hooks: AdminHooks, h: Handle) {
  return {
    revokeMapping: h((req) =>
      counts(broker.revokeMapping(req.deviceFileId, req.cookie, req.reason, enforcement(req))),
    ),
    revokeSession: h((req) => counts(broker.revokeSession(req.sessionId, req.reason, enforcement(req)))),
    drainDevice: h((req) => counts(broker.drainDevice(req.deviceId, req.reason))),
    setDeviceMode: h((req) => {
      const { info, previous } = broker.setDeviceMode(
        req.deviceId,
        modeFromPb(req.mode),
        boundedReason(req.reason),
      );
      return { device: deviceToPb(info, broker.healthOf(info.id)), previousMode: modeToPb(previous) };
    }),
    undrainDevice: h((req) => {
      broker.undrainDevice(req.deviceId);
      return {};
    }),
    reloadPolicy: h(() => {
      const r = hooks.reloadPolicy();
      return { ok: r.ok, errors: r.errors, digest: broker.policy.digest, rules: broker.policy.rules.length };
    }),
  };
}

/** Kubernetes claims the node agent binds to pods (claims/bindings.ts). */
function claims(broker: Broker, h: Handle) {
  const pb = (c: { uid: string; namespace: string; name: string; pods: string[]; devices: string[] }) => ({
    claimUid: c.uid,
    namespace: c.namespace,
    claimName: c.name,
    podUids: c.pods,
    deviceIds: c.devices,
  });
  return {
    bindClaim: h((req) => {
      const c = req.claim;
      if (!c) throw invalid("claim is required", "claim");
      const r = broker.claims.bind({
        uid: c.claimUid,
        namespace: c.namespace,
        name: c.claimName,
        pods: c.podUids,
        devices: c.deviceIds,
      });
      return { changed: r.changed, ...counts(r.revoked) };
    }),
    unbindClaim: h((req) => {
      const r = broker.claims.unbind(req.claimUid);
      return { wasBound: r.wasBound, ...counts(r.revoked) };
    }),
    listClaims: h(() => ({ claims: broker.claims.list().map(pb) })),
  };
}

/** The sim backend's devices, added and removed (tests and demos). */
function simDevices(broker: Broker, hooks: AdminHooks, h: Handle) {
  const sim = (): SimBackend => {
    if (!hooks.sim) throw precondition("the sim backend is not enabled in this brokerd", "no_sim");
    return hooks.sim;
  };
  return {
    addSimDevice: h((req) => {
      const backend = sim();
      if (!req.deviceId) throw invalid("device_id is required", "device_id");
      const info = backend.addDevice({
        id: req.deviceId,
        regions: req.regions.map((r: { index: number; size: bigint; prefetchable: boolean }) => ({
          index: r.index,
          size: r.size,
          prefetchable: r.prefetchable,
        })),
      });
      return { device: deviceToPb(info, "healthy") };
    }),
    removeSimDevice: h((req) => {
      const backend = sim();
      const dfs = deviceFilesOf(broker, { deviceId: req.deviceId });
      const before = { m: dfs.reduce((n, df) => n + df.mappings.size, 0), d: dfs.length };
      const held0 = broker.holds.size;
      backend.removeDevice(req.deviceId);
      return counts({
        mappingsRevoked: before.m,
        deviceFilesClosed: before.d,
        sessionsEnded: 0,
        mappingsHeld: broker.holds.size - held0,
      });
    }),
  };
}

export function adminServiceImpl(broker: Broker, hooks: AdminHooks): grpc.UntypedServiceImplementation {
  const h: Handle = (fn) =>
    unary((req, call) => {
      hooks.authorize(call);
      return fn(req);
    });
  return {
    ...listings(broker, hooks, h),
    ...inspection(broker, h),
    ...revocations(broker, hooks, h),
    ...simDevices(broker, hooks, h),
    ...claims(broker, h),
  };
}
