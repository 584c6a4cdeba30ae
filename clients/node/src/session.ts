// session.ts: owns the contract between the BrokerClient facade and a session transport
// (grpc-session.ts: Hello + Lease on broker.sock; workload-session.ts: one workload-protocol
// connection to fd.sock), and SessionLost, the error a transport's resume ends the session with.
// Types only. A transport never calls the BrokerClient except through the SessionListener it was
// given (events.ts), never keeps device files or mappings, and never decides a retry.
import type { BrokerService, OpenDeviceResponse, PromiseClient } from "@vfio-broker/proto";
import type { Capabilities, Identity } from "./capabilities.js";
import type { DeviceInfo, LayoutName } from "./convert.js";
import type { SessionListener } from "./events.js";
import type { FdGrantInit, FdReleaseInit, FetchedFd } from "./fd-channel.js";
import type { AccessTarget } from "./region-access.js";
import type { ShadowSource } from "./side-session.js";
import type { Transport } from "./workload-connect.js";

export type Rpc = PromiseClient<typeof BrokerService>;

/** One FdBatch's contents: releases first, then grants (brokerd serves them in order). */
export interface FdBatchInit {
  releases: FdReleaseInit[];
  grants: FdGrantInit[];
}

/** What a transport's resume gets from the client. */
export interface ResumeContext {
  /** What made the client resume (the refusal, or the connection's loss). */
  cause: unknown;
  /** Give up (SessionLost "resume-failed") once this passes, Date.now() ms. */
  deadline: number;
  /** The connection generation the resumed session's lease belongs to. */
  gen: number;
  /** false once the client was closed: stop. */
  live(): boolean;
  /**
   * brokerd has the session back and holds `held`: the client moves to `gen` and drops what is
   * not held, before the transport reopens its lease.
   */
  back(held: readonly { deviceFileId: bigint; cookies: bigint[] }[]): void;
}

/** A transport's resume failed: the session is gone (the client reports leaseLost `reason`). */
export class SessionLost extends Error {
  constructor(
    readonly reason: "resume-failed" | "resume-refused",
    readonly error: Error,
  ) {
    super(error.message, { cause: error });
  }
}

/** What brokerd said when the session began (gRPC Hello or workload welcome). */
export interface SessionInfo {
  readonly sessionId: string;
  readonly serverVersion: string;
  readonly apiVersion: string;
  readonly identity: Identity;
  /** Filled in further by the transport when it learns more (the side session's Hello). */
  readonly capabilities: Capabilities;
}

/** One session with brokerd, on one transport. */
export interface Session {
  readonly transport: Transport;
  readonly info: SessionInfo;
  /** brokerd gave a resume token: the session can be resumed after a restart. */
  readonly resumable: boolean;
  /** Session-bound BrokerService calls (on the workload transport, through the side session). */
  readonly rpc: Rpc;
  /** The fd channel socket path tickets are presented on. */
  readonly fdSocketPath: string;
  /** true while the lease is held (the Lease stream, or the workload connection, is open). */
  readonly leaseActive: boolean;
  /** Maps and releases go in fd-channel batches (see ConnectOptions.fdGrants). */
  readonly fdGrants: boolean;
  /** Events from now on (and any that came since the welcome) go to `l`. */
  listen(l: SessionListener): void;
  /** undefined: the list did not fit the transport's reply; ask through `rpc`. */
  listDevices(): Promise<DeviceInfo[] | undefined>;
  openDevice(
    deviceId: string,
    layout: LayoutName | undefined,
    requestId: string,
  ): Promise<OpenDeviceResponse>;
  closeDevice(deviceFileId: bigint): Promise<unknown>;
  /** ReleaseMapping on the session's own transport (a revocation's acknowledgement). */
  releaseMapping(deviceFileId: bigint, cookie: bigint): Promise<unknown>;
  /** One FdBatch; its reply's items and the fds of its granted items. */
  sendBatch(method: string, batch: FdBatchInit): Promise<FetchedFd>;
  /** Presents a ticket on the fd channel. */
  fetchFd(ticket: string): Promise<FetchedFd>;
  /** Where ReadRegion/WriteRegion on df go. */
  access(df: ShadowSource): Promise<AccessTarget>;
  /** A device file was closed or revoked here. */
  forget(deviceFileId: bigint): void;
  /**
   * Gets the session back after brokerd restarted. Returns the attempts it took, or undefined
   * when there was nothing to resume (the session is still up). Throws SessionLost when brokerd
   * refuses or does not come back by the deadline.
   */
  resume(ctx: ResumeContext): Promise<number | undefined>;
  /** Ends the lease and the connections. */
  close(): void;
}
