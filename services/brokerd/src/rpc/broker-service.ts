// BrokerService handlers: translate protobuf requests into Broker calls made on behalf of the
// caller's kernel-verified Session, and results back. No policy or state lives here; the lease
// rules (one per connection, keepalive expiry, why a session ends with it) are sessions/lease.ts's.

import type { MessageInitShape } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { MAX_FDS_PER_MESSAGE } from "@vfio-broker/native";
import type { LeaseRequest, LeaseResponseSchema } from "@vfio-broker/proto";
import { isUndecodable, Layout as PbLayout } from "@vfio-broker/proto";
import { type Broker, VERSION } from "../broker.js";
import { invalid, precondition } from "../errors.js";
import { MAX_BATCH_ITEMS } from "../fdpass/adapter.js";
import type { Session } from "../identity/session.js";
import {
  checkNoLease,
  KEEPALIVE_INTERVAL_MS,
  LEASE_CANCELLED,
  LEASE_CLOSED,
  LEASE_ERROR,
  type LeaseEnd,
  LeaseExpiry,
} from "../sessions/lease.js";
import {
  attributeFromPb,
  attributeToPb,
  backingToPb,
  createMappingArgsFromPb,
  deviceToPb,
  identityToPb,
  layoutFromPb,
  layoutToPb,
  mappingToPb,
  modeToPb,
  regionToPb,
} from "./convert.js";
import { leaseSink } from "./lease-sink.js";
import { toStatus, unary } from "./status.js";
import { checkString, checkStrings, SESSION_METADATA_LIMIT } from "./strings.js";

export { KEEPALIVE_INTERVAL_MS } from "../sessions/lease.js";

/** Call metadata naming the session the client believes this connection has. */
export const SESSION_METADATA = "vfio-broker-session";

/**
 * The call's session, checked against the session the client names in its metadata (if any): after
 * brokerd restarted under a client, its channel reconnects to a fresh session; the call is then
 * refused with nothing done, so the client resumes and retries it without doubling anything.
 */
function expectedSession(call: { metadata?: grpc.Metadata }, s: Session): Session {
  const want = call.metadata?.get(SESSION_METADATA)[0];
  if (typeof want === "string") checkString(`metadata ${SESSION_METADATA}`, want, SESSION_METADATA_LIMIT);
  if (typeof want === "string" && want !== "" && want !== s.id)
    throw precondition(
      `this connection has session ${s.id}, not ${want.slice(0, 32)} (brokerd restarted); resume with Hello{resume_token} and retry`,
      "session_changed",
    );
  return s;
}

type LeaseCall = grpc.ServerDuplexStream<LeaseRequest, MessageInitShape<typeof LeaseResponseSchema>>;

export interface SessionBinding {
  sessionOf(call: { getPeer(): string }): Session;
  /** The call's connection has session s from now on (resume). */
  rebind(call: { getPeer(): string }, s: Session): void;
}

/** What this brokerd offers, for Hello: what this host can actually give, and the fd channel's limits. */
function capabilities(broker: Broker, s: Session) {
  return {
    maxFdsPerMessage: MAX_FDS_PER_MESSAGE,
    layouts: [PbLayout.LEGACY, PbLayout.COMPACT],
    // What this host can actually give: the union over its devices' regions and backends.
    attributes: [
      ...new Set(broker.allDevices().flatMap((d) => d.info.regions.flatMap((r) => r.attributes))),
    ].map(attributeToPb),
    // (a backend serving no device gives nothing: both PCI backends exist whenever one does)
    backings: [
      ...new Set(
        broker.opts.backends
          .filter((b) => b.devices().length > 0)
          .flatMap((b) => b.offeredBackingKinds?.() ?? b.backingKinds),
      ),
    ].map(backingToPb),
    // The modes of the devices this caller may open (each device's own is in Device.mode).
    deviceModes: broker.deviceModesFor(s).map(modeToPb),
    ticketTtlMs: broker.opts.ticketTtlMs,
    maxAccessBytes: broker.opts.maxAccessBytes,
    fdSocketPath: broker.opts.fdSocketPath,
    fdSocketName: broker.opts.fdSocketName ?? "",
    fdGrants: true,
    fdBatches: true,
    maxFdBatchItems: MAX_BATCH_ITEMS,
    pageSize: Number(broker.opts.pageSize),
  };
}

/**
 * One Lease stream: the session's events go down it (rpc/lease-sink.ts), keepalives refresh its
 * expiry (sessions/lease.ts), and the session ends with it.
 */
function serveLease(
  broker: Broker,
  sessionOf: (call: LeaseCall) => Session,
  keepaliveIntervalMs: number,
  call: LeaseCall,
): void {
  let s: Session;
  try {
    s = expectedSession(call, sessionOf(call));
    broker.authorize(s);
    checkNoLease(s);
  } catch (e) {
    call.emit("error", toStatus(e));
    return;
  }
  s.lease = leaseSink(call, (why) => broker.endSession(s, why.reason, why.message));
  const end = (e: LeaseEnd) => broker.endSession(s, e.reason, e.message);
  // Events missed while brokerd restarted (revocations made meanwhile) come first.
  broker.leaseOpened(s);
  const expiry = new LeaseExpiry(keepaliveIntervalMs, end);
  call.once("close", () => expiry.stop());
  call.write({ kind: { case: "granted", value: { sessionId: s.id, keepaliveIntervalMs } } });
  call.on("data", (m: LeaseRequest) => {
    if (isUndecodable(m)) {
      call.emit("error", toStatus(invalid(m.message, "undecodable")));
      broker.endSession(s, LEASE_ERROR.reason, m.message);
      return;
    }
    expiry.refresh();
    if (m.kind.case === "keepalive")
      s.lease?.send({ kind: "keepalive_ack", sequence: m.kind.value.sequence });
  });
  // The client half-closed: a clean end (LeaseEnded, then status OK), and the session ends.
  call.on("end", () => end(LEASE_CLOSED));
  call.on("cancelled", () => end(LEASE_CANCELLED));
  call.on("error", () => end(LEASE_ERROR));
}

export function brokerServiceImpl(
  broker: Broker,
  binding: SessionBinding,
  keepaliveIntervalMs = KEEPALIVE_INTERVAL_MS,
): grpc.UntypedServiceImplementation {
  // biome-ignore lint/suspicious/noExplicitAny: requests are typed by the generated schemas at the call sites
  type Any = any;
  const sessionOf = (call: { getPeer(): string }) => binding.sessionOf(call);
  // While a hand-over is in progress a call waits for it to settle (restart/gate.ts). Every
  // request's strings are checked against their limits (rpc/strings.ts) before anything else.
  const h = <O>(fn: (req: Any, s: Session) => O) =>
    unary<Any, O>((req, call) => {
      checkStrings(req);
      return broker.handover.wait().then(() => fn(req, expectedSession(call, sessionOf(call))));
    });
  return {
    hello: unary<Any, unknown>(async (req, call) => {
      checkStrings(req);
      await broker.handover.wait();
      let s = sessionOf(call);
      broker.authorize(s);
      s.clientName = String(req.clientName ?? "");
      const token = String(req.resumeToken ?? "");
      const resumed = token !== "" ? broker.resume(s, token, (r) => binding.rebind(call, r)) : undefined;
      if (resumed) s = resumed;
      return {
        resumeToken: s.resumeToken,
        resumed: !!resumed,
        held: resumed
          ? [...s.deviceFiles.values()].map((df) => ({
              deviceFileId: df.id,
              deviceId: df.device.id,
              cookies: [...df.mappings.keys()],
            }))
          : [],
        serverVersion: VERSION,
        apiVersion: "vfiobroker.v1",
        sessionId: s.id,
        identity: identityToPb(s.identity),
        capabilities: capabilities(broker, s),
      };
    }),
    listDevices: h((_req, s) => ({
      devices: broker.listDevices(s).map((d) => deviceToPb(d.info, d.health)),
    })),
    getDevice: h((req, s) => {
      const d = broker.getDevice(s, req.deviceId);
      return { device: deviceToPb(d.info, d.health) };
    }),
    openDevice: h((req, s) => {
      const df = broker.openDevice(s, req.deviceId, layoutFromPb(req.layout), String(req.requestId ?? ""));
      return {
        deviceFileId: df.id,
        layout: layoutToPb(df.layout),
        device: deviceToPb(df.device, broker.healthOf(df.device.id)),
        regions: df.device.regions.map((r) => ({ region: regionToPb(r), cookie: df.regionCookie(r.index) })),
      };
    }),
    getRegionInfo: h((req, s) => {
      const { region, cookie } = broker.regionInfo(s, req.deviceFileId, req.regionIndex);
      return { region: { region: regionToPb(region), cookie } };
    }),
    createMapping: h((req, s) => {
      const r = broker.createMapping(s, createMappingArgsFromPb(req));
      return { mapping: mappingToPb(r.mapping), ticket: r.ticket, ticketExpiresUnixMs: BigInt(r.expiresAt) };
    }),
    setMappingAttribute: h((req, s) => ({
      mapping: mappingToPb(
        broker.setMappingAttribute(
          s,
          req.deviceFileId,
          req.cookie,
          attributeFromPb(req.attribute),
          req.allowFallback,
        ),
      ),
    })),
    releaseMapping: h((req, s) => {
      broker.releaseMapping(s, req.deviceFileId, req.cookie);
      return {};
    }),
    closeDevice: h((req, s) => ({ mappingsReleased: broker.closeDevice(s, req.deviceFileId) })),
    readRegion: h((req, s) => ({ data: broker.readRegion(s, req.deviceFileId, req.offset, req.length) })),
    writeRegion: h((req, s) => ({ written: broker.writeRegion(s, req.deviceFileId, req.offset, req.data) })),
    lease: (call: LeaseCall) => serveLease(broker, sessionOf, keepaliveIntervalMs, call),
  } satisfies Record<string, unknown> as grpc.UntypedServiceImplementation;
}
