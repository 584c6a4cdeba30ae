// grpc-session.ts: owns a session on the gRPC transport (ConnectOptions.transport "grpc"): the
// connection to broker.sock and its Hello (with the EAGAIN retry and the words for a socket
// nobody answers on), the automatic Lease, the fd channel tickets and grants go on, and the
// resume after a brokerd restart (a fresh channel, Hello with the resume token until brokerd is
// back, the new Lease). It reports lease events only through its SessionListener and never keeps
// device files or mappings: what a revocation or a resume means for them is BrokerClient's.
import type { BrokerService, HelloResponse, OpenDeviceResponse, PromiseClient } from "@vfio-broker/proto";
import { capabilitiesFromHello, identityFromPb } from "./capabilities.js";
import type { ConnectOptions } from "./connect-options.js";
import { type DeviceInfo, deviceFromPb, healthFromPb, type LayoutName, layoutToPb } from "./convert.js";
import { BrokerClientError, toClientError } from "./errors.js";
import type { SessionListener } from "./events.js";
import { FdChannelConnection, type FetchedFd, fdSocketCandidates } from "./fd-channel.js";
import { brokerChannel, sessionBound } from "./grpc-channel.js";
import { Lease } from "./lease.js";
import type { AccessTarget } from "./region-access.js";
import { backoffMs, isRestart, sleep } from "./resume.js";
import {
  type FdBatchInit,
  type ResumeContext,
  type Rpc,
  type Session,
  type SessionInfo,
  SessionLost,
} from "./session.js";
import type { ShadowSource } from "./side-session.js";

/**
 * Connects to broker.sock and says Hello (within timeoutMs). One connection = one brokerd
 * session: the client is never shared with another session.
 */
export async function helloGrpc(
  socket: string,
  clientName: string,
  timeoutMs: number,
): Promise<{ rpc: Rpc; hello: HelloResponse }> {
  const deadline = Date.now() + timeoutMs;
  for (let backoffMs = 10; ; backoffMs = Math.min(backoffMs * 2, 250)) {
    // One BrokerClient = one connection = one brokerd session. grpc-js would otherwise share one
    // subchannel between clients with the same target, merging their sessions (and leases).
    const rpc = brokerChannel(socket);
    try {
      const hello = await rpc.hello(
        { clientName, clientVersion: "0.1.0" },
        { timeoutMs: Math.max(1, deadline - Date.now()) },
      );
      return { rpc, hello };
    } catch (e) {
      rpc.close();
      const err = toClientError(e, "Hello");
      if (err instanceof BrokerClientError && err.code === "UNAVAILABLE") {
        // grpc-js: "No connection established. Last error: Error: connect ECONNREFUSED /path. Resolution note: "
        const errno = /connect (E[A-Z]+)/.exec(err.details)?.[1];
        // EAGAIN: brokerd's accept queue is full for a moment (someone floods it); try again.
        if (errno === "EAGAIN" && Date.now() + backoffMs < deadline) {
          await new Promise((r) => setTimeout(r, backoffMs));
          continue;
        }
        const why =
          errno === "ECONNREFUSED"
            ? "connect ECONNREFUSED: a stale socket file, nothing accepts on it"
            : errno
              ? `connect ${errno}`
              : err.details;
        throw new BrokerClientError("UNAVAILABLE", `brokerd is not answering at ${socket} (${why})`, {
          method: "Hello",
          cause: e,
        });
      }
      throw err;
    }
  }
}

export class GrpcSession implements Session {
  readonly transport = "grpc";
  readonly info: SessionInfo;
  /** Session-bound: every call names this session (resume.ts). */
  rpc: Rpc;
  #raw: PromiseClient<typeof BrokerService>;
  readonly #token: string;
  readonly #fdChannel: FdChannelConnection;
  #lease: Lease | undefined;
  #listener: SessionListener | undefined;

  constructor(
    rpc: Rpc,
    hello: HelloResponse,
    private readonly socket: string,
    private readonly opts: ConnectOptions,
  ) {
    this.#raw = rpc;
    this.#token = hello.resumeToken;
    this.info = {
      sessionId: hello.sessionId,
      serverVersion: hello.serverVersion,
      apiVersion: hello.apiVersion,
      identity: identityFromPb(hello.identity),
      capabilities: capabilitiesFromHello(hello),
    };
    this.rpc = sessionBound(rpc, () => this.info.sessionId);
    const explicit = opts.fdSocket || process.env.VFIO_BROKER_FD_SOCKET;
    const caps = this.info.capabilities;
    this.#fdChannel = new FdChannelConnection(
      explicit || fdSocketCandidates(socket, caps.fdSocketName, caps.fdSocketPath),
    );
  }

  /** The Lease's events go to `l` (from the first openLease on). */
  listen(l: SessionListener): void {
    this.#listener = l;
  }

  get resumable(): boolean {
    return this.#token !== "";
  }

  /** The first candidate until the first fetch connects, then the one that accepted. */
  get fdSocketPath(): string {
    return this.#fdChannel.path;
  }

  /** true while the Lease stream is open (false without one). */
  get leaseActive(): boolean {
    return this.#lease?.active ?? false;
  }

  get fdGrants(): boolean {
    const c = this.info.capabilities;
    return (
      c.fdGrants && c.fdBatches && c.maxFdBatchItems > 0 && this.opts.fdGrants !== false && this.resumable
    );
  }

  /** Opens the Lease on the current connection; its events belong to connection generation `gen`. */
  async openLease(timeoutMs: number, gen: number): Promise<void> {
    const l = this.#listener!;
    const { lease } = await Lease.open(
      this.rpc,
      {
        revocation: (r) => l.revocation(r),
        deviceHealth: (deviceId, health) => l.deviceHealth(deviceId, healthFromPb(health)),
        lost: (reason, error, endedReason) => l.lost(reason, error, endedReason, gen),
      },
      timeoutMs,
    );
    this.#lease = lease;
  }

  async listDevices(): Promise<DeviceInfo[] | undefined> {
    const res = await this.rpc.listDevices({});
    return res.devices.map(deviceFromPb);
  }

  openDevice(
    deviceId: string,
    layout: LayoutName | undefined,
    requestId: string,
  ): Promise<OpenDeviceResponse> {
    return this.rpc.openDevice({ deviceId, layout: layoutToPb(layout), requestId });
  }

  closeDevice(deviceFileId: bigint): Promise<unknown> {
    return this.rpc.closeDevice({ deviceFileId });
  }

  releaseMapping(deviceFileId: bigint, cookie: bigint): Promise<unknown> {
    return this.rpc.releaseMapping({ deviceFileId, cookie });
  }

  /** One FdBatch on the fd channel, with the session token. */
  sendBatch(method: string, batch: FdBatchInit): Promise<FetchedFd> {
    return this.#fdChannel.request({ batch: { ...batch, sessionToken: this.#token } }, { method }, "batch");
  }

  fetchFd(ticket: string): Promise<FetchedFd> {
    return this.#fdChannel.fetch(ticket);
  }

  async access(df: ShadowSource): Promise<AccessTarget> {
    const maxAccessBytes = this.info.capabilities.maxAccessBytes;
    return { rpc: this.rpc, deviceFileId: df.id, maxAccessBytes, regionSpace: false };
  }

  forget(_deviceFileId: bigint): void {}

  /**
   * Reconnects with backoff, Hello with the resume token, hands brokerd's held list to the client,
   * reopens the lease.
   */
  async resume(ctx: ResumeContext): Promise<number> {
    this.#lease?.end();
    this.#lease = undefined;
    // One new channel for the whole resume: it reconnects by itself (quickly: brokerd restarts in
    // about a second), and each Hello that fails fast while it cannot connect is tried again. A
    // channel per attempt would leak connections: grpc-js reconnects a closed channel's subchannel
    // once its backoff ends, opening sessions nobody uses.
    this.#raw.close();
    const raw = brokerChannel(this.socket, {
      "grpc.initial_reconnect_backoff_ms": 25,
      "grpc.min_reconnect_backoff_ms": 25,
      "grpc.max_reconnect_backoff_ms": 1000,
    });
    this.#raw = raw;
    this.rpc = sessionBound(raw, () => this.info.sessionId);
    for (let attempt = 1; ; attempt++) {
      if (!ctx.live()) throw new Error("the client was closed while resuming");
      let hello: HelloResponse;
      try {
        hello = await raw.hello(
          {
            clientName: this.opts.clientName ?? "vfio-broker-node",
            clientVersion: "0.1.0",
            resumeToken: this.#token,
          },
          { timeoutMs: Math.max(1, Math.min(2000, ctx.deadline - Date.now())) },
        );
      } catch (e) {
        const err = toClientError(e, "Hello");
        if (
          Date.now() + backoffMs(attempt) < ctx.deadline &&
          (isRestart(err) || (err instanceof BrokerClientError && err.code === "DEADLINE_EXCEEDED"))
        ) {
          await sleep(backoffMs(attempt));
          continue;
        }
        throw new SessionLost("resume-failed", err);
      }
      if (!hello.resumed)
        throw new SessionLost(
          "resume-refused",
          new BrokerClientError(
            "FAILED_PRECONDITION",
            `brokerd restarted and no longer has session ${this.info.sessionId} (its grants were released); connect() again`,
            { method: "Hello", cause: ctx.cause },
          ),
        );
      ctx.back(hello.held);
      if (this.opts.lease !== false) await this.openLease(this.opts.timeoutMs ?? 10_000, ctx.gen);
      return attempt;
    }
  }

  close(): void {
    this.#lease?.end();
    this.#fdChannel.close();
    this.#raw.close();
  }
}
