// workload-session.ts: owns a session on the workload transport (the default): one
// workload-protocol connection to fd.sock (its welcome; the connection is the lease, its events
// relayed to the client), list/open/close/release and the FdBatches on it, the gRPC side session
// for what the protocol lacks (side-session.ts), and the resume after a brokerd restart (a new
// connection with the resume token, only once the old one is gone). It reports lease events only
// through its SessionListener and never keeps device files or mappings: what a revocation or a
// resume means for them is BrokerClient's.
import { create } from "@bufbuild/protobuf";
import {
  type HelloResponse,
  type OpenDeviceResponse,
  OpenDeviceResponseSchema,
  type WorkloadEvent,
} from "@vfio-broker/proto/messages";
import { capabilitiesFromWelcome, fillGrpcOnly, identityFromPb } from "./capabilities.js";
import type { ConnectOptions } from "./connect-options.js";
import { type DeviceInfo, deviceFromPb, healthFromPb, type LayoutName, layoutToPb } from "./convert.js";
import { BrokerClientError, toClientError } from "./errors.js";
import type { SessionListener } from "./events.js";
import { FdChannelConnection, type FetchedFd } from "./fd-channel.js";
import type { AccessTarget } from "./region-access.js";
import {
  type FdBatchInit,
  type ResumeContext,
  type Rpc,
  type Session,
  type SessionInfo,
  SessionLost,
} from "./session.js";
import { lazyRpc, type ShadowSource, SideSession } from "./side-session.js";
import type { WorkloadChannel, WorkloadHandlers } from "./workload-channel.js";
import { reopenWorkload } from "./workload-connect.js";

/**
 * A workload channel's handlers, forwarding to the client's listener once it listens (the
 * channel reads from its welcome on, before connect() has made the client). `gen`: the
 * connection generation the channel belongs to (a late loss of an older one is ignored).
 */
export class Relay implements WorkloadHandlers {
  #listener: SessionListener | undefined;
  readonly #early: (() => void)[] = [];
  constructor(readonly gen: number) {}
  attach(l: SessionListener): void {
    this.#listener = l;
    for (const f of this.#early.splice(0)) f();
  }
  event(e: WorkloadEvent): void {
    const k = e.kind;
    if (k.case === "revocation") this.#run((l) => l.revocation(k.value));
    else if (k.case === "deviceHealth")
      this.#run((l) => l.deviceHealth(k.value.deviceId, healthFromPb(k.value.health)));
    // leaseEnded: the connection's close that follows reports it (lost, with its reason).
  }
  closed(error: Error, endedReason: string | undefined): void {
    this.#run((l) => l.lost(error.message, error, endedReason, this.gen));
  }
  #run(f: (l: SessionListener) => void): void {
    if (this.#listener) f(this.#listener);
    else this.#early.push(() => f(this.#listener!));
  }
}

export class WorkloadSession implements Session {
  readonly transport = "workload";
  readonly info: SessionInfo;
  /** BrokerService calls through the side session (opened at the first one). */
  readonly rpc: Rpc;
  #wl: WorkloadChannel;
  readonly #relay: Relay;
  readonly #side: SideSession;
  /** The side session's Hello the gRPC-only capabilities were last filled in from. */
  #filledFrom: HelloResponse | undefined;
  readonly #token: string;
  /** For tickets (a brokerd that offers no batches). */
  readonly #fdChannel: FdChannelConnection;
  #listener: SessionListener | undefined;

  constructor(
    channel: WorkloadChannel,
    relay: Relay,
    socket: string,
    private readonly opts: ConnectOptions,
  ) {
    const w = channel.welcome;
    this.#wl = channel;
    this.#relay = relay;
    this.#side = new SideSession(socket, opts.clientName ?? "vfio-broker-node", opts.timeoutMs ?? 10_000);
    this.rpc = lazyRpc(this.#side);
    this.#token = w.resumeToken;
    this.info = {
      sessionId: w.sessionId,
      serverVersion: w.serverVersion,
      apiVersion: "vfiobroker.v1",
      identity: identityFromPb(w.identity),
      capabilities: capabilitiesFromWelcome(w),
    };
    this.#fdChannel = new FdChannelConnection(channel.path);
  }

  /** Events from now on (and any that came since the welcome) go to `l`. */
  listen(l: SessionListener): void {
    this.#listener = l;
    this.#relay.attach(l);
  }

  get resumable(): boolean {
    return this.#token !== "";
  }

  get fdSocketPath(): string {
    return this.#wl.path;
  }

  /** The connection is the lease. */
  get leaseActive(): boolean {
    return this.#wl.open;
  }

  get fdGrants(): boolean {
    return this.info.capabilities.maxFdBatchItems > 0;
  }

  /** undefined when the list did not fit one reply frame (64 KiB): the gRPC call has all of it. */
  async listDevices(): Promise<DeviceInfo[] | undefined> {
    const { reply } = await this.#wl.request({ case: "listDevices", value: {} }, "ListDevices");
    const list = reply.kind.case === "devices" ? reply.kind.value : undefined;
    return list && !list.truncated ? list.devices.map(deviceFromPb) : undefined;
  }

  /** OpenDevice on the workload connection, its reply as the gRPC call's. */
  async openDevice(
    deviceId: string,
    layout: LayoutName | undefined,
    requestId: string,
  ): Promise<OpenDeviceResponse> {
    const { reply } = await this.#wl.request(
      { case: "openDevice", value: { deviceId, layout: layoutToPb(layout), requestId } },
      "OpenDevice",
    );
    if (reply.kind.case !== "deviceOpened") throw new Error("OpenDevice: brokerd's reply opened nothing");
    const o = reply.kind.value;
    return create(OpenDeviceResponseSchema, {
      deviceFileId: o.deviceFileId,
      layout: o.layout,
      device: o.device,
      regions: (o.device?.regions ?? []).map((region, i) => ({ region, cookie: o.regionCookies[i] ?? 0n })),
    });
  }

  closeDevice(deviceFileId: bigint): Promise<unknown> {
    return this.#wl.request({ case: "closeDevice", value: { deviceFileId } }, "CloseDevice");
  }

  releaseMapping(deviceFileId: bigint, cookie: bigint): Promise<unknown> {
    return this.#wl.request({ case: "release", value: { deviceFileId, cookie } }, "ReleaseMapping");
  }

  async sendBatch(method: string, batch: FdBatchInit): Promise<FetchedFd> {
    const { reply, fds } = await this.#wl.request({ case: "batch", value: batch }, method);
    return { reply: reply.kind.value as FetchedFd["reply"], fd: -1, fds };
  }

  fetchFd(ticket: string): Promise<FetchedFd> {
    return this.#fdChannel.fetch(ticket);
  }

  /** df's shadow in the side session (side-session.ts), whose offsets are region space only. */
  async access(df: ShadowSource): Promise<AccessTarget> {
    const side = this.#side;
    const rpc = await side.rpc();
    const hello = side.hello;
    if (hello && this.#filledFrom !== hello) {
      this.#filledFrom = hello;
      fillGrpcOnly(this.info.capabilities, hello);
    }
    return {
      rpc,
      deviceFileId: await side.shadow(df),
      maxAccessBytes: this.info.capabilities.maxAccessBytes,
      regionSpace: true,
    };
  }

  forget(deviceFileId: bigint): void {
    this.#side.forget(deviceFileId);
  }

  /**
   * Only once the connection is gone (brokerd restarted or was killed). A gRPC side-session call
   * that failed as if brokerd restarted while the connection is still up resumes only the side
   * session: the workload session is never given up for it.
   */
  async resume(ctx: ResumeContext): Promise<number | undefined> {
    const old = this.#wl;
    this.#side.restarted();
    if (old.open) return undefined;
    const relay = new Relay(ctx.gen);
    if (this.#listener) relay.attach(this.#listener);
    let got: { channel: WorkloadChannel; attempts: number };
    try {
      got = await reopenWorkload(
        old.path,
        { clientName: this.opts.clientName ?? "vfio-broker-node", resumeToken: this.#token },
        relay,
        ctx.deadline,
        () => ctx.live(),
      );
    } catch (e) {
      throw new SessionLost("resume-failed", toClientError(e, "Hello"));
    }
    const { channel, attempts } = got;
    if (!ctx.live()) {
      channel.close();
      throw new Error("the client was closed while resuming");
    }
    if (!channel.welcome.resumed) {
      channel.close();
      throw new SessionLost(
        "resume-refused",
        new BrokerClientError(
          "FAILED_PRECONDITION",
          `brokerd restarted and no longer has session ${this.info.sessionId} (its grants were released); connect() again`,
          { method: "Hello", cause: ctx.cause },
        ),
      );
    }
    this.#wl = channel;
    ctx.back(channel.welcome.held);
    return attempts;
  }

  close(): void {
    this.#wl.close();
    this.#side.close();
    this.#fdChannel.close();
  }
}
