// BrokerService handlers: translate protobuf requests into Broker calls made on behalf of the
// caller's kernel-verified Session, and results back. No policy or state lives here.

import type { MessageInitShape } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { MAX_FDS_PER_MESSAGE } from "@vfio-broker/native";
import type { LeaseRequest, LeaseResponseSchema } from "@vfio-broker/proto";
import { isUndecodable, Layout as PbLayout } from "@vfio-broker/proto";
import { type Broker, VERSION } from "../broker.js";
import { invalid, precondition } from "../errors.js";
import type { Session } from "../identity/session.js";
import {
  attributeFromPb,
  attributeToPb,
  backingToPb,
  deviceToPb,
  identityToPb,
  layoutFromPb,
  layoutToPb,
  mappingToPb,
  protFromPb,
  regionToPb,
} from "./convert.js";
import { leaseSink } from "./lease-sink.js";
import { toStatus, unary } from "./status.js";

export const KEEPALIVE_INTERVAL_MS = 5000;

export function brokerServiceImpl(
  broker: Broker,
  sessionOf: (call: { getPeer(): string }) => Session,
  keepaliveIntervalMs = KEEPALIVE_INTERVAL_MS,
): grpc.UntypedServiceImplementation {
  // biome-ignore lint/suspicious/noExplicitAny: requests are typed by the generated schemas at the call sites
  type Any = any;
  const h = <O>(fn: (req: Any, s: Session) => O) => unary<Any, O>((req, call) => fn(req, sessionOf(call)));
  return {
    hello: h((req, s) => {
      broker.authorize(s);
      s.clientName = String(req.clientName ?? "").slice(0, 128);
      return {
        serverVersion: VERSION,
        apiVersion: "vfiobroker.v1",
        sessionId: s.id,
        identity: identityToPb(s.identity),
        capabilities: {
          maxFdsPerMessage: MAX_FDS_PER_MESSAGE,
          layouts: [PbLayout.LEGACY, PbLayout.COMPACT],
          // What this host can actually give: the union over its devices' regions and backends.
          attributes: [
            ...new Set(broker.allDevices().flatMap((d) => d.info.regions.flatMap((r) => r.attributes))),
          ].map(attributeToPb),
          backings: [
            ...new Set(broker.opts.backends.flatMap((b) => b.offeredBackingKinds?.() ?? b.backingKinds)),
          ].map(backingToPb),
          ticketTtlMs: broker.opts.ticketTtlMs,
          maxAccessBytes: broker.opts.maxAccessBytes,
          fdSocketPath: broker.opts.fdSocketPath,
          fdSocketName: broker.opts.fdSocketName ?? "",
          pageSize: Number(broker.opts.pageSize),
        },
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
      const df = broker.openDevice(s, req.deviceId, layoutFromPb(req.layout));
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
      const r = broker.createMapping(s, {
        deviceFileId: req.deviceFileId,
        regionIndex: req.regionIndex,
        offset: req.offset,
        length: req.length,
        attribute: attributeFromPb(req.attribute),
        prot: protFromPb(req.prot),
        allowFallback: req.allowFallback,
      });
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
    lease: (call: grpc.ServerDuplexStream<LeaseRequest, MessageInitShape<typeof LeaseResponseSchema>>) => {
      let s: Session;
      try {
        s = sessionOf(call);
        broker.authorize(s);
        if (s.lease)
          throw precondition("this connection already has a lease; open one Lease per connection", "lease");
      } catch (e) {
        call.emit("error", toStatus(e));
        return;
      }
      s.lease = leaseSink(call, (why) => broker.endSession(s, why.reason, why.message));
      // Exactly three missed intervals end the session, with LeaseEnded saying so.
      const expiry = setTimeout(() => {
        broker.endSession(
          s,
          "lease-expired",
          `no keepalive for ${3 * keepaliveIntervalMs} ms (three intervals of ${keepaliveIntervalMs} ms); ` +
            "the session ended and its mappings were released",
        );
      }, 3 * keepaliveIntervalMs);
      expiry.unref();
      call.once("close", () => clearTimeout(expiry));
      call.write({ kind: { case: "granted", value: { sessionId: s.id, keepaliveIntervalMs } } });
      call.on("data", (m: LeaseRequest) => {
        if (isUndecodable(m)) {
          call.emit("error", toStatus(invalid(m.message, "undecodable")));
          broker.endSession(s, "lease-error", m.message);
          return;
        }
        expiry.refresh();
        if (m.kind.case === "keepalive")
          s.lease?.send({ kind: "keepalive_ack", sequence: m.kind.value.sequence });
      });
      // The client half-closed: a clean end (LeaseEnded, then status OK), and the session ends.
      call.on("end", () => broker.endSession(s, "lease-closed", "you closed the lease"));
      call.on("cancelled", () => broker.endSession(s, "lease-cancelled"));
      call.on("error", () => broker.endSession(s, "lease-error"));
    },
  } satisfies Record<string, unknown> as grpc.UntypedServiceImplementation;
}
