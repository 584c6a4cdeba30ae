// The workload protocol's adapter (proto/vfiobroker/v1/workload.proto): on a connection whose first
// frame was a hello (fdpass/protocols.ts decides), it opens a Session with the identity the kernel
// gives for the connection, and serves list, open, grant, release, batch and close by calling the
// Broker's core calls exactly as the gRPC handlers do (rpc/broker-service.ts), so quotas, policy,
// journal, metrics and state records are a gRPC session's. The session's lease is the connection
// (fdpass/workload-lease.ts pushes its events); the connection closing ends the session.
// What a frame says and whether it breaks a limit is fdpass/workload-decode.ts's (pure).
// It holds only which session each connection has; it decides no quota, policy or event itself.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { create, toBinary } from "@bufbuild/protobuf";
import { closeFd } from "@vfio-broker/native";
import { FdStatus, type WorkloadHello, WorkloadReplySchema, type WorkloadRequest } from "@vfio-broker/proto";
import { type Broker, VERSION } from "../broker.js";
import { restarting, sessionEnded } from "../errors.js";
import { reportFdBadRequest } from "../grants/fd-reports.js";
import type { PeerIdentity } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import { deviceToPb, identityToPb, layoutFromPb, layoutToPb, modeToPb } from "../rpc/convert.js";
import {
  type FdAdapter,
  type FdReplyInit,
  type GrantPath,
  MAX_BATCH_ITEMS,
  MAX_REQUEST_BYTES,
  refused,
} from "./adapter.js";
import { encodeWorkloadFdReply } from "./reply-codec.js";
import { type FdConnection, MAX_REPLY_FDS } from "./transport.js";
import { decodeRequest, helloOf, helloProblem, kindOf, MAX_CAPABILITIES } from "./workload-decode.js";
import { MAX_QUEUED_EVENTS, type Stalled, workloadLease } from "./workload-lease.js";

/** The protocol versions spoken: 1 only. */
export const WORKLOAD_VERSION = 1;
/** The largest reply frame (a device list past it is truncated). */
export const MAX_REPLY_BYTES = 65536;
export { MAX_CAPABILITIES } from "./workload-decode.js";

/** What this brokerd offers (workload.proto, WorkloadWelcome). */
const OFFERED = ["events", "batch", "resume"];

type ReplyInit = MessageInitShape<typeof WorkloadReplySchema>;
type Kind = NonNullable<ReplyInit["kind"]>;

const encode = (r: ReplyInit): Uint8Array => toBinary(WorkloadReplySchema, create(WorkloadReplySchema, r));

/** A reply of kind k (status OK), or the error `e` as the gRPC call would have returned it. */
const ok = (k: Kind): Uint8Array => encode({ status: FdStatus.OK, kind: k });
const badRequest = (message: string): Uint8Array => encode({ status: FdStatus.BAD_REQUEST, message });
function failed(e: unknown): Uint8Array {
  const r = refused(e);
  return encode({ status: r.status, message: r.message, grpcCode: r.grpcCode });
}

/** A grant/release/batch FdReply framed as the workload reply of kind `k`. */
function wrapFd(k: "grant" | "release" | "batch"): (r: FdReplyInit) => Uint8Array {
  return (r) =>
    r.status === FdStatus.OK
      ? (k !== "batch" && encodeWorkloadFdReply(k, r)) || ok({ case: k, value: r })
      : encode({ status: r.status, message: r.message, grpcCode: r.grpcCode });
}
const wrapGrant = wrapFd("grant");
const wrapRelease = wrapFd("release");
const wrapBatch = wrapFd("batch");

/** A request after the hello, decoded (workload-decode.ts). */
type Request = Exclude<WorkloadRequest["kind"], { case: "hello" | undefined }>;
const FALSE = Promise.resolve(false);
const TRUE = () => true;

export class WorkloadAdapter {
  /** Each workload connection's session, once its hello opened one. */
  private readonly sessions = new WeakMap<FdConnection, Session>();
  /** A lease's peer stopped reading: its session ends, then its connection (every lease's). */
  private readonly stalled: Stalled = (why, c) => {
    const now = this.sessions.get(c);
    if (now) this.broker.endSession(now, why.reason, why.message);
    c.end();
  };

  /** How grants, releases and batches find the connection's session and frame their replies. */
  private readonly paths: Record<"grant" | "release" | "batch", GrantPath>;

  constructor(
    private readonly broker: Broker,
    private readonly fd: FdAdapter,
  ) {
    // One of each for every connection (none made per request): the session is looked up by the
    // connection when the request is served.
    const session = (_token: string, _peer: unknown, c: FdConnection) => this.sessionOf(c);
    this.paths = {
      grant: { session, encode: wrapGrant },
      release: { session, encode: wrapRelease },
      batch: { session, encode: wrapBatch },
    };
  }

  /** The first frame's hello, if it is one (workload-decode.ts). */
  static helloOf = helloOf;
  /** The request kind a frame holds, if it is a WorkloadRequest that names one. */
  static kindOf = kindOf;

  /** The hello: a session for the connection's kernel identity; false: the connection closes. */
  async hello(c: FdConnection, h: WorkloadHello): Promise<boolean> {
    const problem = helloProblem(h);
    if (problem !== undefined) {
      await this.bad(c, problem);
      return false;
    }
    if (h.version < WORKLOAD_VERSION) {
      const message = `this brokerd speaks workload protocol version ${WORKLOAD_VERSION} only; the hello asked for ${h.version}`;
      await c.reply(encode({ status: FdStatus.UNSUPPORTED_VERSION, message }));
      return false;
    }
    await this.broker.handover.wait();
    if (this.broker.frozen) return false;
    let identity: PeerIdentity;
    try {
      identity = c.identify();
    } catch {
      return false; // the peer is gone already
    }
    let s: Session;
    try {
      s = this.broker.openSession(identity);
    } catch (e) {
      closeFd(identity.pidfd);
      await c.reply(failed(e));
      return false;
    }
    this.sessions.set(c, s);
    c.holdOpen();
    s.clientName = h.clientName;
    const lease = workloadLease(c, this.stalled);
    s.lease = lease;
    try {
      const resumed =
        h.resumeToken !== "" ? this.broker.resume(s, h.resumeToken, (r) => this.attach(c, s, r)) : undefined;
      if (resumed) s = resumed;
      // Events it missed while brokerd restarted come first (held until the reply is out).
      this.broker.leaseOpened(s);
      await c.reply(ok({ case: "hello", value: this.welcome(s, !!resumed) }));
    } catch (e) {
      await c.reply(failed(e));
      return false;
    }
    lease.ready();
    return true;
  }

  /** A resume: the connection has the restored session from now on, and its lease moves with it. */
  private attach(c: FdConnection, fresh: Session, restored: Session): void {
    this.sessions.set(c, restored);
    restored.lease = fresh.lease;
    fresh.lease = undefined;
  }

  private welcome(s: Session, resumed: boolean) {
    return {
      version: WORKLOAD_VERSION,
      capabilities: OFFERED,
      identity: identityToPb(s.identity),
      sessionId: s.id,
      resumeToken: s.resumeToken,
      resumed,
      held: resumed
        ? [...s.deviceFiles.values()].map((df) => ({
            deviceFileId: df.id,
            deviceId: df.device.id,
            cookies: [...df.mappings.keys()],
          }))
        : [],
      serverVersion: VERSION,
      limits: {
        maxRequestBytes: MAX_REQUEST_BYTES,
        maxReplyBytes: MAX_REPLY_BYTES,
        maxBatchItems: MAX_BATCH_ITEMS,
        maxFdsPerReply: MAX_REPLY_FDS,
        maxQueuedEvents: MAX_QUEUED_EVENTS,
        maxCapabilities: MAX_CAPABILITIES,
      },
      pageSize: BigInt(this.broker.opts.pageSize),
      deviceModes: this.broker.deviceModesFor(s).map(modeToPb),
    };
  }

  /**
   * Every frame after the hello; false: the connection is served no more. The usual request (room
   * for its reply's fds at once, no hand-over) is passed on in this call, with no await of its own.
   */
  serve(c: FdConnection, frame: Uint8Array): Promise<boolean> {
    const s = this.sessions.get(c);
    if (!s || s.ended) return FALSE;
    const d = decodeRequest(frame);
    if (!d.ok) return this.bad(c, d.message);
    const k = d.kind;
    const fds =
      k.case === "grant" ? 1 : k.case === "batch" ? Math.min(k.value.grants.length, MAX_BATCH_ITEMS) : 0;
    const room = c.room(fds); // true at once in the usual case
    if (room !== true || this.broker.handover.held) return this.serveLater(c, s, k, room);
    return this.serveNow(c, s, k);
  }

  /** serve() once its reply's fds fit and a hand-over in progress settled. */
  private async serveLater(
    c: FdConnection,
    s: Session,
    k: Request,
    room: true | Promise<boolean>,
  ): Promise<boolean> {
    if (room !== true && !(await room)) return false;
    await this.broker.handover.wait();
    return this.serveNow(c, s, k);
  }

  private serveNow(c: FdConnection, s: Session, k: Request): Promise<boolean> {
    if (this.broker.frozen) return FALSE;
    switch (k.case) {
      case "grant":
        return this.fd.grant(c, k.value, this.paths.grant);
      case "release":
        return this.fd.release(c, k.value, this.paths.release);
      case "batch":
        return this.fd.batch(c, k.value, this.paths.batch);
    }
    let reply: Uint8Array;
    try {
      reply = this.call(s, k);
    } catch (e) {
      reply = failed(e);
    }
    return c.reply(reply).then(TRUE);
  }

  /**
   * The connection's session for a grant, release or batch, if it may make calls now (as live());
   * one the connection's close ended meanwhile is refused as any ended session.
   */
  private sessionOf(c: FdConnection): Session {
    const s = this.sessions.get(c);
    if (s) return this.live(s);
    throw this.broker.frozen ? restarting() : sessionEnded();
  }

  /** A malformed request: answered (the connection stays usable) and counted as the fd channel counts them. */
  private async bad(c: FdConnection, message: string): Promise<boolean> {
    await c.reply(badRequest(message));
    reportFdBadRequest(this.broker, c.peer);
    return true;
  }

  /** The session, if it may make calls now (the gRPC handlers' check). */
  private live(s: Session): Session {
    this.broker.authorize(s);
    return s;
  }

  /** list, open and close: the Broker's calls, answered as the gRPC handlers answer them. */
  private call(
    s: Session,
    k: Exclude<WorkloadRequest["kind"], { case: "hello" | "grant" | "release" | "batch" | undefined }>,
  ): Uint8Array {
    const { broker } = this;
    switch (k.case) {
      case "listDevices":
        return this.devices(broker.listDevices(this.live(s)).map((d) => deviceToPb(d.info, d.health)));
      case "openDevice": {
        const o = k.value;
        const df = broker.openDevice(this.live(s), o.deviceId, layoutFromPb(o.layout), o.requestId);
        return ok({
          case: "deviceOpened",
          value: {
            deviceFileId: df.id,
            layout: layoutToPb(df.layout),
            device: deviceToPb(df.device, broker.healthOf(df.device.id)),
            regionCookies: df.device.regions.map((r) => df.regionCookie(r.index)),
          },
        });
      }
      case "closeDevice": {
        const n = broker.closeDevice(this.live(s), k.value.deviceFileId);
        return ok({
          case: "deviceClosed",
          value: { deviceFileId: k.value.deviceFileId, mappingsReleased: n },
        });
      }
    }
  }

  /** The device list, cut to fit in one reply frame. */
  private devices(list: ReturnType<typeof deviceToPb>[]): Uint8Array {
    for (let n = list.length; ; n--) {
      const bytes = ok({ case: "devices", value: { devices: list.slice(0, n), truncated: n < list.length } });
      if (bytes.length <= MAX_REPLY_BYTES || n === 0) return bytes;
    }
  }

  /** The connection closed: its session ends, and its slot in the sessions quota is given back. */
  closed(c: FdConnection): void {
    const s = this.sessions.get(c);
    if (!s) return;
    this.sessions.delete(c);
    this.broker.endSession(s, "disconnect");
    this.broker.releaseSlot(s);
  }
}
