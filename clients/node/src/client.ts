// client.ts: owns connect() and BrokerClient: the gRPC connection to brokerd (one connection = one
// session), Hello, the automatic Lease, the DeviceFiles opened through it, and the events the lease
// carries. On a revocation it unmaps the revoked mappings BEFORE telling anyone, so no listener can
// touch revoked memory; on losing the lease it unmaps everything (the broker ended the session).
import { EventEmitter } from "node:events";
import { statSync } from "node:fs";
import {
  BrokerService,
  createClient,
  type HelloResponse,
  type PromiseClient,
  type Revocation,
} from "@vfio-broker/proto";
import {
  type AttributeName,
  attributeFromPb,
  type BackingName,
  backingFromPb,
  type DeviceInfo,
  deviceFromPb,
  type HealthName,
  healthFromPb,
  type LayoutName,
  layoutFromPb,
  layoutToPb,
} from "./convert.js";
import { DeviceFile, type DeviceFileHost } from "./device-file.js";
import { BrokerClientError, toClientError } from "./errors.js";
import { FdChannelConnection, type FetchedFd, fdSocketCandidates } from "./fd-channel.js";
import { Lease } from "./lease.js";
import type { Mapping } from "./mapping.js";

export const DEFAULT_SOCKET = "/run/vfio-broker/broker.sock";

export interface ConnectOptions {
  /** brokerd's gRPC socket. Default: $VFIO_BROKER_SOCKET, else /run/vfio-broker/broker.sock. */
  socket?: string;
  /**
   * The fd channel socket. Default: $VFIO_BROKER_FD_SOCKET, else found by itself: Hello's
   * fd_socket_name next to `socket` (wherever its directory is mounted), then Hello's fd_socket_path.
   */
  fdSocket?: string;
  /** Shown to operators (admin API, audit log). Default "vfio-broker-node". */
  clientName?: string;
  /** Open the Lease stream and keep it alive (default true). Without it there are no events. */
  lease?: boolean;
  /** Deadline for Hello and the lease grant, milliseconds. Default 10000. */
  timeoutMs?: number;
}

export interface Identity {
  uid: number;
  gid: number;
  pid: number;
  cgroup: string;
  pidfdSource: string;
  /** From the cgroup path, "" when it names none: the 64-hex container id, */
  containerId: string;
  /** "docker", "podman", "containerd", "cri-o" or "kubepods", */
  containerRuntime: string;
  /** the Kubernetes pod UID and the pod's QoS class. */
  podUid: string;
  qosClass: string;
}

export interface Capabilities {
  maxFdsPerMessage: number;
  layouts: LayoutName[];
  attributes: AttributeName[];
  backings: BackingName[];
  ticketTtlMs: number;
  maxAccessBytes: number;
  fdSocketPath: string;
  /** The fd socket's name relative to the broker socket's directory ("" if elsewhere). */
  fdSocketName: string;
  pageSize: number;
}

export interface RevocationEvent {
  deviceFileId: bigint;
  /** 0n when the whole device file was revoked. */
  cookie: bigint;
  deviceId: string;
  /** "operator", "device-drain", "device-gone", "policy". */
  reason: string;
  message: string;
  /** The mappings of this client that the revocation took (already unmapped). */
  mappings: Mapping[];
}

export interface DeviceHealthEvent {
  deviceId: string;
  health: HealthName;
}

export interface LeaseLostEvent {
  reason: string;
  error: Error | undefined;
  /** Every mapping this client still held (all unmapped now: the broker ended the session). */
  mappings: Mapping[];
}

export type BrokerClientEvents = {
  revocation: [RevocationEvent];
  deviceHealth: [DeviceHealthEvent];
  leaseLost: [LeaseLostEvent];
};

function socketMissing(path: string): BrokerClientError | undefined {
  try {
    const st = statSync(path);
    if (!st.isSocket())
      return new BrokerClientError("UNAVAILABLE", `${path} is not a socket; brokerd is not running there`);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR")
      return new BrokerClientError("UNAVAILABLE", `brokerd is not running at ${path} (no socket there)`);
    if (code === "EACCES")
      return new BrokerClientError(
        "PERMISSION_DENIED",
        `cannot reach ${path}: permission denied on its directory`,
      );
    return undefined;
  }
}

export class BrokerClient extends EventEmitter<BrokerClientEvents> implements DeviceFileHost {
  /** The gRPC socket path this client is connected to. */
  readonly socket: string;
  /**
   * The fd channel socket path tickets are presented on: the first candidate until the first
   * fetch connects, then the one that accepted.
   */
  get fdSocketPath(): string {
    return this.#fdChannel.path;
  }
  readonly serverVersion: string;
  readonly apiVersion: string;
  /** Who the kernel says this process is (as brokerd sees it). */
  readonly identity: Identity;
  readonly sessionId: string;
  readonly capabilities: Capabilities;
  /** @internal */
  readonly rpc: PromiseClient<typeof BrokerService>;
  readonly #deviceFiles = new Map<bigint, DeviceFile>();
  #lease: Lease | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #fdChannel: FdChannelConnection;

  /** @internal Use connect(). */
  constructor(
    rpc: PromiseClient<typeof BrokerService>,
    socket: string,
    hello: HelloResponse,
    fdSocket?: string,
  ) {
    super();
    this.rpc = rpc;
    this.socket = socket;
    this.serverVersion = hello.serverVersion;
    this.apiVersion = hello.apiVersion;
    this.sessionId = hello.sessionId;
    const id = hello.identity;
    this.identity = {
      uid: id?.uid ?? 0,
      gid: id?.gid ?? 0,
      pid: id?.pid ?? 0,
      cgroup: id?.cgroup ?? "",
      pidfdSource: id?.pidfdSource ?? "",
      containerId: id?.containerId ?? "",
      containerRuntime: id?.containerRuntime ?? "",
      podUid: id?.podUid ?? "",
      qosClass: id?.qosClass ?? "",
    };
    const c = hello.capabilities;
    this.capabilities = {
      maxFdsPerMessage: c?.maxFdsPerMessage ?? 1,
      layouts: (c?.layouts ?? []).map(layoutFromPb),
      attributes: (c?.attributes ?? [])
        .map(attributeFromPb)
        .filter((a): a is AttributeName => a !== "unspecified"),
      backings: (c?.backings ?? []).map(backingFromPb),
      ticketTtlMs: c?.ticketTtlMs ?? 0,
      maxAccessBytes: c?.maxAccessBytes ?? 0,
      fdSocketPath: c?.fdSocketPath ?? "",
      fdSocketName: c?.fdSocketName ?? "",
      pageSize: c?.pageSize ?? 4096,
    };
    const explicit = fdSocket || process.env.VFIO_BROKER_FD_SOCKET;
    this.#fdChannel = new FdChannelConnection(
      explicit || fdSocketCandidates(socket, this.capabilities.fdSocketName, this.capabilities.fdSocketPath),
    );
  }

  /** @internal DeviceFileHost: presents a ticket on this client's fd-channel connection. */
  fetchFd(ticket: string): Promise<FetchedFd> {
    return this.#fdChannel.fetch(ticket);
  }

  get maxAccessBytes(): number {
    return this.capabilities.maxAccessBytes;
  }

  /** true while the lease stream is open (false without a lease, after close() or losing it). */
  get leaseActive(): boolean {
    return this.#lease?.active ?? false;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Open device files (not closed, not revoked). */
  get deviceFiles(): DeviceFile[] {
    return [...this.#deviceFiles.values()];
  }

  /** @internal Runs one BrokerService call, translating its error. */
  async call<T>(method: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new Error(`${method}: the client is closed; connect() again`);
    try {
      return await fn();
    } catch (e) {
      throw toClientError(e, method);
    }
  }

  /** Devices this identity may open under the broker's policy. */
  async devices(): Promise<DeviceInfo[]> {
    const res = await this.call("ListDevices", () => this.rpc.listDevices({}));
    return res.devices.map(deviceFromPb);
  }

  async device(id: string): Promise<DeviceInfo> {
    const res = await this.call("GetDevice", () => this.rpc.getDevice({ deviceId: id }));
    if (!res.device) throw new BrokerClientError("NOT_FOUND", `the broker returned no device for ${id}`);
    return deviceFromPb(res.device);
  }

  /** OpenDevice: a DeviceFile (this client's own view of the device, with its own cookie space). */
  async open(deviceId: string, opts: { layout?: LayoutName } = {}): Promise<DeviceFile> {
    const res = await this.call("OpenDevice", () =>
      this.rpc.openDevice({ deviceId, layout: layoutToPb(opts.layout) }),
    );
    const df = new DeviceFile(this, res);
    this.#deviceFiles.set(df.id, df);
    return df;
  }

  /** Releases everything (unmaps, closes device files), ends the lease and the connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const errors: unknown[] = [];
    for (const df of [...this.#deviceFiles.values()]) {
      try {
        await df.close();
      } catch (e) {
        errors.push(e);
      }
    }
    this.#closed = true;
    this.#lease?.end();
    this.#fdChannel.close();
    this.rpc.close();
    if (errors.length > 0 && !(errors[0] instanceof BrokerClientError && errors[0].code === "UNAVAILABLE"))
      throw errors[0];
  }

  /** @internal DeviceFileHost */
  deviceFileClosed(df: DeviceFile): void {
    this.#deviceFiles.delete(df.id);
  }

  /** @internal */
  attachLease(lease: Lease): void {
    this.#lease = lease;
  }

  /** @internal A Revocation came down the lease: unmap first, then tell listeners. */
  onRevocation(r: Revocation): void {
    const df = this.#deviceFiles.get(r.deviceFileId);
    const mappings = df ? df.revoke(r.cookie, r.reason) : [];
    this.emit("revocation", {
      deviceFileId: r.deviceFileId,
      cookie: r.cookie,
      deviceId: r.deviceId,
      reason: r.reason,
      message: r.message,
      mappings,
    });
  }

  /** @internal The lease is gone: so is the session and every grant in it. */
  onLeaseLost(reason: string, error: Error | undefined): void {
    if (this.#closed || this.#closing) return;
    const mappings: Mapping[] = [];
    for (const df of [...this.#deviceFiles.values()]) mappings.push(...df.revokeAll("lease-lost"));
    this.emit("leaseLost", { reason, error, mappings });
  }
}

/** Connects to brokerd, says Hello and (by default) opens the lease. */
export async function connect(opts: ConnectOptions = {}): Promise<BrokerClient> {
  const socket = opts.socket || process.env.VFIO_BROKER_SOCKET || DEFAULT_SOCKET;
  const missing = socketMissing(socket);
  if (missing) throw missing;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  let rpc: PromiseClient<typeof BrokerService>;
  let hello: HelloResponse;
  for (let backoffMs = 10; ; backoffMs = Math.min(backoffMs * 2, 250)) {
    // One BrokerClient = one connection = one brokerd session. grpc-js would otherwise share one
    // subchannel between clients with the same target, merging their sessions (and leases).
    rpc = createClient(BrokerService, `unix:${socket}`, undefined, { "grpc.use_local_subchannel_pool": 1 });
    try {
      hello = await rpc.hello(
        { clientName: opts.clientName ?? "vfio-broker-node", clientVersion: "0.1.0" },
        { timeoutMs: Math.max(1, deadline - Date.now()) },
      );
      break;
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
  const client = new BrokerClient(rpc, socket, hello, opts.fdSocket);
  if (opts.lease !== false) {
    try {
      const { lease } = await Lease.open(
        rpc,
        {
          revocation: (r) => client.onRevocation(r),
          deviceHealth: (deviceId, health) =>
            client.emit("deviceHealth", { deviceId, health: healthFromPb(health) }),
          lost: (reason, error) => client.onLeaseLost(reason, error),
        },
        timeoutMs,
      );
      client.attachLease(lease);
    } catch (e) {
      rpc.close();
      throw toClientError(e, "Lease");
    }
  }
  return client;
}
