// client.ts: owns connect() and BrokerClient: the connection to brokerd (one connection = one
// session) on either transport (workload-connect.ts chooses): the workload protocol on fd.sock (the
// default: its hello, its connection as the lease, its events) or gRPC on broker.sock (Hello, the
// automatic Lease); the DeviceFiles opened through it, and the events the lease carries. On a
// revocation it unmaps the revoked mappings BEFORE telling anyone, so no listener can touch revoked
// memory, and then tells brokerd it has (ReleaseMapping / CloseDevice: brokerd keeps the pages
// booked until then); on losing the lease it unmaps everything (the broker ended the session).
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { statSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import { closeFd } from "@vfio-broker/native";
import {
  BrokerService,
  createClient,
  type FdReply,
  FdStatus,
  type HelloResponse,
  type OpenDeviceResponse,
  OpenDeviceResponseSchema,
  type Identity as PbIdentity,
  type PromiseClient,
  type WorkloadEvent,
  type WorkloadWelcome,
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
import { type AccessTarget, DeviceFile, type DeviceFileHost } from "./device-file.js";
import { BrokerClientError, toClientError } from "./errors.js";
import {
  FdChannelConnection,
  type FdGrantInit,
  type FdReleaseInit,
  type FetchedFd,
  fdSocketCandidates,
  type GrantResult,
  itemError,
  MAX_BATCH_ITEMS,
} from "./fd-channel.js";
import { Lease } from "./lease.js";
import type { Mapping } from "./mapping.js";
import { backoffMs, brokerdGone, isRestart, leaseLossIsRestart, sessionBound, sleep } from "./resume.js";
import { lazyRpc, SideSession } from "./side-session.js";
import type { WorkloadChannel, WorkloadHandlers } from "./workload-channel.js";
import { chooseTransport, openWorkload, reopenWorkload, type Transport } from "./workload-connect.js";

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
  /**
   * When brokerd restarts (upgrade, crash, kill -9), reconnect with backoff and resume the session:
   * device files and mappings stay (mappings stay mapped), the lease is reopened, calls in flight
   * are retried (each state change carries a request id, so none is doubled). Default true.
   */
  autoResume?: boolean;
  /** How long to keep trying to resume before giving up (then "leaseLost"), ms. Default 60000. */
  resumeTimeoutMs?: number;
  /**
   * Map and release through the fd channel's grant fast path when brokerd offers it (one
   * exchange per grant instead of two gRPC calls and a ticket). Default true; false: always gRPC
   * (CreateMapping + a ticket), which implies transport "grpc".
   */
  fdGrants?: boolean;
  /**
   * "workload" (the default; else $VFIO_BROKER_TRANSPORT): the session is one workload-protocol
   * connection to fd.sock (workload.proto): hello, list, open, map, release, batches, close and
   * the events all go on it, and the connection is the lease (no keepalives; `lease` is ignored).
   * The calls it lacks (read/write, device(), anything through `rpc`) go through a second
   * session, over gRPC, opened at the first such call and counted against the sessions quota
   * (side-session.ts). "grpc": everything on broker.sock as before (Hello, Lease, tickets or
   * fd-channel grants).
   */
  transport?: Transport;
}

export interface Identity {
  uid: number;
  gid: number;
  pid: number;
  cgroup: string;
  pidfdSource: string;
  /** From the cgroup path, "" when it names none or a user could have made it: the 64-hex container id, */
  containerId: string;
  /** "docker", "podman", "containerd", "cri-o" or "kubepods", */
  containerRuntime: string;
  /** the Kubernetes pod UID and the pod's QoS class. */
  podUid: string;
  qosClass: string;
}

/**
 * What brokerd offers. On the workload transport only pageSize, maxFdsPerMessage, fdGrants,
 * fdBatches and maxFdBatchItems come from the welcome; the others are the gRPC Hello's, known
 * (and filled in here) once a gRPC-only call opened the side session, empty or 0 until then.
 */
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
  /** brokerd takes grants and releases on the fd channel (one exchange per grant, no gRPC call). */
  fdGrants: boolean;
  /** ... and batches of them (FdBatch), up to maxFdBatchItems items each. */
  fdBatches: boolean;
  maxFdBatchItems: number;
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

export interface ResumedEvent {
  sessionId: string;
  /** From noticing brokerd was gone to having the session back, ms. */
  downtimeMs: number;
  /** Attempts it took (each a fresh connection and Hello). */
  attempts: number;
}

export type BrokerClientEvents = {
  revocation: [RevocationEvent];
  deviceHealth: [DeviceHealthEvent];
  leaseLost: [LeaseLostEvent];
  /** brokerd restarted and this client has its session back (mappings never left). */
  resumed: [ResumedEvent];
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

/** What a revocation says, from a gRPC Lease or a workload event (the same fields). */
interface RevocationNotice {
  deviceFileId: bigint;
  cookie: bigint;
  deviceId: string;
  reason: string;
  message: string;
}

function capabilitiesFromHello(hello: HelloResponse): Capabilities {
  const c = hello.capabilities;
  return {
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
    fdGrants: c?.fdGrants ?? false,
    fdBatches: c?.fdBatches ?? false,
    maxFdBatchItems: Math.min(c?.maxFdBatchItems ?? 0, MAX_BATCH_ITEMS),
    pageSize: c?.pageSize ?? 4096,
  };
}

function identityFromPb(id: PbIdentity | undefined): Identity {
  return {
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
}

/**
 * A workload channel's handlers, forwarding to the client once it exists (the channel reads from
 * its welcome on, before connect() has made the client). `gen`: the connection generation the
 * channel belongs to (a late loss of an older one is ignored).
 */
class Relay implements WorkloadHandlers {
  #client: BrokerClient | undefined;
  readonly #early: (() => void)[] = [];
  constructor(readonly gen: number) {}
  attach(c: BrokerClient): void {
    this.#client = c;
    for (const f of this.#early.splice(0)) f();
  }
  event(e: WorkloadEvent): void {
    this.#run((c) => c.onWorkloadEvent(e));
  }
  closed(error: Error, endedReason: string | undefined): void {
    this.#run((c) => c.onLeaseLost(error.message, error, endedReason, this.gen));
  }
  #run(f: (c: BrokerClient) => void): void {
    if (this.#client) f(this.#client);
    else this.#early.push(() => f(this.#client!));
  }
}

/** @internal How a BrokerClient starts: a gRPC Hello, or a workload-protocol welcome. */
export type ClientStart =
  | { kind: "grpc"; rpc: PromiseClient<typeof BrokerService>; hello: HelloResponse }
  | { kind: "workload"; channel: WorkloadChannel; relay: Relay };

export class BrokerClient extends EventEmitter<BrokerClientEvents> implements DeviceFileHost {
  /** The gRPC socket path this client is connected to. */
  readonly socket: string;
  /**
   * The fd channel socket path tickets are presented on: the first candidate until the first
   * fetch connects, then the one that accepted.
   */
  get fdSocketPath(): string {
    return this.#wl?.path ?? this.#fdChannel.path;
  }
  /** "workload" (the workload protocol on fd.sock) or "grpc" (ConnectOptions.transport). */
  readonly transport: Transport;
  readonly serverVersion: string;
  readonly apiVersion: string;
  /** Who the kernel says this process is (as brokerd sees it). */
  readonly identity: Identity;
  readonly sessionId: string;
  readonly capabilities: Capabilities;
  /** @internal Session-bound: every call names this client's session (resume.ts). */
  rpc: PromiseClient<typeof BrokerService>;
  #raw: PromiseClient<typeof BrokerService> | undefined;
  /** The workload transport: the connection (the session), and the gRPC side session. */
  #wl: WorkloadChannel | undefined;
  readonly #side: SideSession | undefined;
  /** The side session's Hello the gRPC-only capabilities were last filled in from. */
  #filledFrom: HelloResponse | undefined;
  readonly #token: string;
  readonly #opts: ConnectOptions;
  #resuming: Promise<void> | undefined;
  /**
   * Connection generation: +1 at each resume. An error from an older generation's connection
   * (a late lease loss, a call that was in flight) means "retry", never "resume again": a second
   * resume would replace the connection that just got the session back.
   */
  #gen = 0;
  readonly #deviceFiles = new Map<bigint, DeviceFile>();
  #lease: Lease | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #fdChannel: FdChannelConnection;
  /** Releases waiting for the next batch (fdRelease). */
  readonly #releases: { release: FdReleaseInit; resolve(): void; reject(e: unknown): void }[] = [];
  #flushing = false;

  /** @internal Use connect(). */
  constructor(start: ClientStart, socket: string, opts: ConnectOptions = {}) {
    super();
    this.#opts = opts;
    this.socket = socket;
    this.transport = start.kind;
    if (start.kind === "workload") {
      const w: WorkloadWelcome = start.channel.welcome;
      this.#wl = start.channel;
      this.#side = new SideSession(socket, opts.clientName ?? "vfio-broker-node", opts.timeoutMs ?? 10_000);
      this.rpc = lazyRpc(this.#side);
      this.#token = w.resumeToken;
      this.serverVersion = w.serverVersion;
      this.apiVersion = "vfiobroker.v1";
      this.sessionId = w.sessionId;
      this.identity = identityFromPb(w.identity);
      this.capabilities = {
        maxFdsPerMessage: w.limits?.maxFdsPerReply ?? 1,
        layouts: [],
        attributes: [],
        backings: [],
        ticketTtlMs: 0,
        maxAccessBytes: 0,
        fdSocketPath: "",
        fdSocketName: "",
        fdGrants: true,
        fdBatches: true,
        maxFdBatchItems: Math.min(w.limits?.maxBatchItems ?? 0, MAX_BATCH_ITEMS),
        pageSize: Number(w.pageSize || 4096n),
      };
      this.#fdChannel = new FdChannelConnection(start.channel.path);
      start.relay.attach(this);
      return;
    }
    const { rpc, hello } = start;
    this.#raw = rpc;
    this.rpc = sessionBound(rpc, () => this.sessionId);
    this.#token = hello.resumeToken;
    this.serverVersion = hello.serverVersion;
    this.apiVersion = hello.apiVersion;
    this.sessionId = hello.sessionId;
    this.identity = identityFromPb(hello.identity);
    this.capabilities = capabilitiesFromHello(hello);
    const explicit = opts.fdSocket || process.env.VFIO_BROKER_FD_SOCKET;
    this.#fdChannel = new FdChannelConnection(
      explicit || fdSocketCandidates(socket, this.capabilities.fdSocketName, this.capabilities.fdSocketPath),
    );
  }

  /**
   * @internal DeviceFileHost: presents a ticket on this client's fd-channel connection. If brokerd
   * restarts meanwhile, the ticket (kept in its state store) is presented again to the new one.
   */
  fetchFd(ticket: string): Promise<FetchedFd> {
    return this.#retrying("FetchFd", () => this.#fdChannel.fetch(ticket));
  }

  /**
   * @internal DeviceFileHost: grants and releases go through the fd channel's batches (see
   * ConnectOptions.fdGrants); a brokerd without them is used through gRPC.
   */
  get fdGrants(): boolean {
    if (this.#wl) return this.capabilities.maxFdBatchItems > 0;
    return (
      this.capabilities.fdGrants &&
      this.capabilities.fdBatches &&
      this.capabilities.maxFdBatchItems > 0 &&
      this.#opts.fdGrants !== false &&
      this.#token !== ""
    );
  }

  /**
   * @internal DeviceFileHost: grants on the fd channel, in one FdBatch (with any releases waiting
   * to go), retried after a resume if brokerd restarts under it (request ids make a retried grant
   * return the same mapping). One result per grant, in order: its reply and fd, or its error.
   */
  async fdGrant(grants: FdGrantInit[]): Promise<GrantResult[]> {
    const max = this.capabilities.maxFdBatchItems;
    if (grants.length > max)
      throw new RangeError(`at most ${max} mappings in one batch, got ${grants.length}; split them`);
    // Releases that do not fit go first, in batches of their own (brokerd serves them in order), so
    // a grant of a page just released makes a fresh mapping, not another reference on the old one.
    this.#sendReleases(max - grants.length);
    const { items, fds } = await this.#batch("CreateMapping", grants);
    let next = 0;
    return items.map((it) => {
      if (it.status === FdStatus.OK) return { reply: it, fd: fds[next++]! };
      return { error: itemError(it, "CreateMapping") };
    });
  }

  /**
   * @internal DeviceFileHost: a release on the fd channel. It is not sent on its own at once: it
   * rides along with the next grant of this turn of the event loop, or goes in one batch with the
   * other releases of this turn after it. Resolves when brokerd has done it; a cookie brokerd no
   * longer has (revoked meanwhile, or released by a retry) counts as released.
   */
  fdRelease(release: FdReleaseInit): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#releases.push({ release, resolve, reject });
      if (this.#flushing) return;
      this.#flushing = true;
      setImmediate(() => {
        this.#flushing = false;
        this.#sendReleases(0);
      });
    });
  }

  /**
   * Sends waiting releases in batches of their own until at most `keep` wait. Each release's own
   * promise hears how it went (#batch settles it), so the batch's is not needed here.
   */
  #sendReleases(keep: number): void {
    while (this.#releases.length > keep) this.#batch("ReleaseMapping", []).catch(() => {});
  }

  /**
   * One FdBatch: the waiting releases that fit, then `grants`. The releases' promises are settled
   * here (with their own item's result, or the whole batch's error); the grants' items and fds
   * are returned.
   */
  async #batch(method: string, grants: FdGrantInit[]): Promise<{ items: FdReply[]; fds: number[] }> {
    const releases = this.#releases.splice(0, this.capabilities.maxFdBatchItems - grants.length);
    let got: FetchedFd;
    try {
      const batch = { releases: releases.map((r) => r.release), grants };
      got = await this.#retrying(method, () => this.#sendBatch(method, batch));
    } catch (e) {
      for (const r of releases) r.reject(e);
      throw e;
    }
    const items = got.reply.items;
    const fds = got.fds ?? [];
    if (items.length !== releases.length + grants.length) {
      for (const fd of fds) closeFd(fd);
      const e = new Error(
        `fd channel: a batch of ${releases.length + grants.length} items got ${items.length} results`,
      );
      for (const r of releases) r.reject(e);
      throw e;
    }
    releases.forEach((r, i) => {
      const it = items[i]!;
      if (it.status === FdStatus.OK || (it.status === FdStatus.REFUSED && it.grpcCode === "NOT_FOUND"))
        r.resolve();
      else r.reject(itemError(it, "ReleaseMapping"));
    });
    return { items: items.slice(releases.length), fds };
  }

  /** One FdBatch: on the workload connection, or on the fd channel with the session token. */
  async #sendBatch(
    method: string,
    batch: { releases: FdReleaseInit[]; grants: FdGrantInit[] },
  ): Promise<FetchedFd> {
    const wl = this.#wl;
    if (!wl)
      return this.#fdChannel.request({ batch: { ...batch, sessionToken: this.#token } }, { method }, "batch");
    const { reply, fds } = await wl.request({ case: "batch", value: batch }, method);
    return { reply: reply.kind.value as FdReply, fd: -1, fds };
  }

  get #autoResume(): boolean {
    return this.#opts.autoResume !== false && this.#token !== "";
  }

  get maxAccessBytes(): number {
    return this.capabilities.maxAccessBytes;
  }

  /**
   * true while the lease is held: the gRPC Lease stream is open, or on the workload transport the
   * connection is (false without a gRPC lease, after close() or losing it).
   */
  get leaseActive(): boolean {
    if (this.#wl) return this.#wl.open && !this.#closed;
    return this.#lease?.active ?? false;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Open device files (not closed, not revoked). */
  get deviceFiles(): DeviceFile[] {
    return [...this.#deviceFiles.values()];
  }

  /**
   * @internal Runs one BrokerService call, translating its error, resumed and retried if brokerd
   * restarts under it (#retrying).
   */
  call<T>(method: string, fn: () => Promise<T>, opts: { idempotent?: boolean } = {}): Promise<T> {
    return this.#retrying(method, fn, opts.idempotent);
  }

  /**
   * Runs one request to brokerd (a gRPC call, or an fd-channel exchange), translating its error.
   * If brokerd restarted under it (its refusal says so, or the fd channel went away), resumes the
   * session and runs it again, at most 3 times. `idempotent`: a NOT_FOUND on a retry means the
   * first try did it (a release whose reply was lost), so it counts as done.
   */
  async #retrying<T>(method: string, run: () => Promise<T>, idempotent = false): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new Error(`${method}: the client is closed; connect() again`);
      if (this.#resuming) await this.#resuming;
      const gen = this.#gen;
      try {
        return await run();
      } catch (e) {
        const err = toClientError(e, method);
        if (attempt > 0 && idempotent && err instanceof BrokerClientError && err.code === "NOT_FOUND")
          return undefined as T;
        if (!this.#autoResume || attempt >= 3 || !(isRestart(err) || brokerdGone(err))) throw err;
        await this.resume(err, gen);
      }
    }
  }

  /**
   * Gets the session back after brokerd restarted: reconnects with backoff (a fresh connection
   * each try), Hello with the resume token, drops locally what brokerd no longer holds, reopens
   * the lease. Single flight: concurrent callers share one resume. Rejects (and the client loses
   * its session: "leaseLost") when brokerd refuses or does not come back in resumeTimeoutMs.
   */
  resume(cause?: unknown, seenGen = this.#gen): Promise<void> {
    // Already resumed since the caller's connection failed: it just retries on the new one.
    if (seenGen !== this.#gen) return Promise.resolve();
    this.#resuming ??= this.#resume(cause).finally(() => {
      this.#resuming = undefined;
    });
    return this.#resuming;
  }

  async #resume(cause: unknown): Promise<void> {
    const t0 = Date.now();
    const deadline = t0 + (this.#opts.resumeTimeoutMs ?? 60_000);
    if (this.#wl) return this.#resumeWorkload(cause, t0, deadline);
    this.#lease?.end();
    this.#lease = undefined;
    // One new channel for the whole resume: it reconnects by itself (quickly: brokerd restarts in
    // about a second), and each Hello that fails fast while it cannot connect is tried again. A
    // channel per attempt would leak connections: grpc-js reconnects a closed channel's subchannel
    // once its backoff ends, opening sessions nobody uses.
    this.#raw?.close();
    this.#raw = createClient(BrokerService, `unix:${this.socket}`, undefined, {
      "grpc.use_local_subchannel_pool": 1,
      "grpc.initial_reconnect_backoff_ms": 25,
      "grpc.min_reconnect_backoff_ms": 25,
      "grpc.max_reconnect_backoff_ms": 1000,
    });
    this.rpc = sessionBound(this.#raw, () => this.sessionId);
    for (let attempt = 1; ; attempt++) {
      if (this.#closed) throw new Error("the client was closed while resuming");
      let hello: HelloResponse;
      try {
        hello = await this.#raw.hello(
          {
            clientName: this.#opts.clientName ?? "vfio-broker-node",
            clientVersion: "0.1.0",
            resumeToken: this.#token,
          },
          { timeoutMs: Math.max(1, Math.min(2000, deadline - Date.now())) },
        );
      } catch (e) {
        const err = toClientError(e, "Hello");
        if (
          Date.now() + backoffMs(attempt) < deadline &&
          (isRestart(err) || (err instanceof BrokerClientError && err.code === "DEADLINE_EXCEEDED"))
        ) {
          await sleep(backoffMs(attempt));
          continue;
        }
        this.#lose("resume-failed", err);
        throw err;
      }
      if (!hello.resumed) {
        const err = new BrokerClientError(
          "FAILED_PRECONDITION",
          `brokerd restarted and no longer has session ${this.sessionId} (its grants were released); connect() again`,
          { method: "Hello", cause },
        );
        this.#lose("resume-refused", err);
        throw err;
      }
      this.#gen++;
      this.#dropWhatIsNotHeld(hello.held);
      if (this.#opts.lease !== false) await this.#openLease(this.#opts.timeoutMs ?? 10_000);
      this.emit("resumed", { sessionId: this.sessionId, downtimeMs: Date.now() - t0, attempts: attempt });
      return;
    }
  }

  /**
   * The workload transport's resume: only once its connection is gone (brokerd restarted or was
   * killed). A gRPC side-session call that failed as if brokerd restarted while the connection is
   * still up resumes only the side session: the workload session is never given up for it.
   */
  async #resumeWorkload(cause: unknown, t0: number, deadline: number): Promise<void> {
    const old = this.#wl!;
    this.#side?.restarted();
    if (old.open) return;
    const relay = new Relay(this.#gen + 1);
    relay.attach(this);
    let got: { channel: WorkloadChannel; attempts: number };
    try {
      got = await reopenWorkload(
        old.path,
        { clientName: this.#opts.clientName ?? "vfio-broker-node", resumeToken: this.#token },
        relay,
        deadline,
        () => !this.#closed,
      );
    } catch (e) {
      const err = toClientError(e, "Hello");
      this.#lose("resume-failed", err);
      throw err;
    }
    const { channel, attempts } = got;
    if (this.#closed) {
      channel.close();
      throw new Error("the client was closed while resuming");
    }
    if (!channel.welcome.resumed) {
      channel.close();
      const err = new BrokerClientError(
        "FAILED_PRECONDITION",
        `brokerd restarted and no longer has session ${this.sessionId} (its grants were released); connect() again`,
        { method: "Hello", cause },
      );
      this.#lose("resume-refused", err);
      throw err;
    }
    this.#gen++;
    this.#wl = channel;
    this.#dropWhatIsNotHeld(channel.welcome.held);
    this.emit("resumed", { sessionId: this.sessionId, downtimeMs: Date.now() - t0, attempts });
  }

  /** After a resume: what brokerd released while we were away is unmapped here too. */
  #dropWhatIsNotHeld(list: readonly { deviceFileId: bigint; cookies: bigint[] }[]): void {
    const held = new Map(list.map((h) => [h.deviceFileId, new Set(h.cookies)]));
    for (const df of [...this.#deviceFiles.values()]) {
      const cookies = held.get(df.id);
      const gone = cookies ? df.mappings.filter((m) => !cookies.has(m.cookie)).map((m) => m.cookie) : [0n];
      for (const cookie of gone) {
        const mappings = df.revoke(cookie, "restart");
        this.emit("revocation", {
          deviceFileId: df.id,
          cookie,
          deviceId: df.deviceId,
          reason: "restart",
          message: "brokerd released this while it restarted",
          mappings,
        });
      }
    }
  }

  /** @internal Opens the lease on the current connection (connect, resume). */
  async #openLease(timeoutMs: number): Promise<void> {
    const gen = this.#gen;
    const { lease } = await Lease.open(
      this.rpc,
      {
        revocation: (r) => this.onRevocation(r),
        deviceHealth: (deviceId, health) =>
          this.emit("deviceHealth", { deviceId, health: healthFromPb(health) }),
        lost: (reason, error, endedReason) => this.onLeaseLost(reason, error, endedReason, gen),
      },
      timeoutMs,
    );
    this.#lease = lease;
  }

  /** @internal connect(): the first lease. */
  openLease(timeoutMs: number): Promise<void> {
    return this.#openLease(timeoutMs);
  }

  /** Devices this identity may open under the broker's policy. */
  async devices(): Promise<DeviceInfo[]> {
    if (this.#wl) {
      const { reply } = await this.call("ListDevices", () =>
        this.#wl!.request({ case: "listDevices", value: {} }, "ListDevices"),
      );
      const list = reply.kind.case === "devices" ? reply.kind.value : undefined;
      // A list past one reply frame (64 KiB) is truncated: the gRPC call has all of it.
      if (list && !list.truncated) return list.devices.map(deviceFromPb);
    }
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
    const requestId = randomUUID();
    const layout = layoutToPb(opts.layout);
    const res = await this.call("OpenDevice", () =>
      this.#wl
        ? this.#openWorkload(this.#wl, deviceId, layout, requestId)
        : this.rpc.openDevice({ deviceId, layout, requestId }),
    );
    const df = new DeviceFile(this, res);
    this.#deviceFiles.set(df.id, df);
    return df;
  }

  /** OpenDevice on the workload connection, its reply as the gRPC call's. */
  async #openWorkload(
    wl: WorkloadChannel,
    deviceId: string,
    layout: ReturnType<typeof layoutToPb>,
    requestId: string,
  ): Promise<OpenDeviceResponse> {
    const { reply } = await wl.request(
      { case: "openDevice", value: { deviceId, layout, requestId } },
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

  /** @internal DeviceFileHost: CloseDevice, on the session's own transport. */
  async closeDevice(df: DeviceFile): Promise<void> {
    const deviceFileId = df.id;
    await this.call<unknown>(
      "CloseDevice",
      () =>
        this.#wl
          ? this.#wl.request({ case: "closeDevice", value: { deviceFileId } }, "CloseDevice")
          : this.rpc.closeDevice({ deviceFileId }),
      { idempotent: true },
    );
  }

  /**
   * @internal DeviceFileHost: where ReadRegion/WriteRegion on df go. gRPC: this session. Workload:
   * df's shadow in the side session (side-session.ts), whose offsets are region space only.
   */
  async access(df: DeviceFile): Promise<AccessTarget> {
    const side = this.#side;
    if (!side)
      return { rpc: this.rpc, deviceFileId: df.id, maxAccessBytes: this.maxAccessBytes, regionSpace: false };
    const rpc = await side.rpc();
    const hello = side.hello;
    if (hello && this.#filledFrom !== hello) {
      this.#filledFrom = hello;
      const { pageSize, maxFdBatchItems, maxFdsPerMessage, fdGrants, fdBatches, ...grpcOnly } =
        capabilitiesFromHello(hello);
      Object.assign(this.capabilities, grpcOnly);
    }
    return {
      rpc,
      deviceFileId: await side.shadow(df),
      maxAccessBytes: this.maxAccessBytes,
      regionSpace: true,
    };
  }

  /** Releases everything (unmaps, closes device files), ends the lease and the connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const errors: unknown[] = [];
    // Closing the device files releases everything on brokerd: releases still waiting are done.
    for (const r of this.#releases.splice(0)) r.resolve();
    for (const df of [...this.#deviceFiles.values()]) {
      try {
        await df.close();
      } catch (e) {
        errors.push(e);
      }
    }
    this.#closed = true;
    this.#lease?.end();
    this.#wl?.close();
    this.#side?.close();
    this.#fdChannel.close();
    this.#raw?.close();
    // brokerd gone or the session already ended: there is nothing left to release.
    const gone = (e: unknown) =>
      brokerdGone(e) || (e instanceof BrokerClientError && e.code === "UNAVAILABLE");
    if (errors.length > 0 && !gone(errors[0])) throw errors[0];
  }

  /** @internal DeviceFileHost */
  deviceFileClosed(df: DeviceFile): void {
    this.#deviceFiles.delete(df.id);
    this.#side?.forget(df.id);
  }

  /** @internal An event on the workload connection (its lease). */
  onWorkloadEvent(e: WorkloadEvent): void {
    const k = e.kind;
    if (k.case === "revocation") this.onRevocation(k.value);
    else if (k.case === "deviceHealth")
      this.emit("deviceHealth", { deviceId: k.value.deviceId, health: healthFromPb(k.value.health) });
    // leaseEnded: the connection's close that follows reports it (onLeaseLost, with its reason).
  }

  /** @internal A Revocation came down the lease: unmap first, then tell listeners. */
  onRevocation(r: RevocationNotice): void {
    const df = this.#deviceFiles.get(r.deviceFileId);
    const mappings = df ? df.revoke(r.cookie, r.reason) : [];
    // Unmapped: tell brokerd, which keeps the pages booked until the holder says so (or exits).
    if (mappings.length > 0) {
      const { deviceFileId, cookie } = r;
      const wl = this.#wl;
      const ack = wl
        ? cookie === 0n
          ? wl.request({ case: "closeDevice", value: { deviceFileId } }, "CloseDevice")
          : wl.request({ case: "release", value: { deviceFileId, cookie } }, "ReleaseMapping")
        : cookie === 0n
          ? this.rpc.closeDevice({ deviceFileId })
          : this.rpc.releaseMapping({ deviceFileId, cookie });
      Promise.resolve(ack).catch(() => {}); // the session may be ending (shutdown, revoked): its exit frees them
    }
    this.emit("revocation", {
      deviceFileId: r.deviceFileId,
      cookie: r.cookie,
      deviceId: r.deviceId,
      reason: r.reason,
      message: r.message,
      mappings,
    });
  }

  /**
   * @internal The lease is gone. If brokerd is restarting (LeaseEnded "restart", or the connection
   * dropped), the session is resumed and nothing is unmapped; else the session and every grant in
   * it are gone.
   */
  onLeaseLost(reason: string, error: Error | undefined, endedReason?: string, gen = this.#gen): void {
    if (this.#closed || this.#closing || gen !== this.#gen) return;
    if (this.#autoResume && leaseLossIsRestart(endedReason, error)) {
      this.resume(error, gen).catch(() => {}); // a failed resume reports leaseLost itself
      return;
    }
    this.#lose(reason, error);
  }

  #lose(reason: string, error: Error | undefined): void {
    if (this.#closed || this.#closing) return;
    const mappings: Mapping[] = [];
    for (const df of [...this.#deviceFiles.values()]) mappings.push(...df.revokeAll("lease-lost"));
    this.emit("leaseLost", { reason, error, mappings });
  }
}

/**
 * Connects to brokerd: by default one workload-protocol connection to fd.sock (its hello; the
 * connection is the lease); with transport "grpc", a gRPC Hello and (by default) the Lease.
 */
export async function connect(opts: ConnectOptions = {}): Promise<BrokerClient> {
  const socket = opts.socket || process.env.VFIO_BROKER_SOCKET || DEFAULT_SOCKET;
  const transport = chooseTransport(opts);
  const explicit = opts.fdSocket || process.env.VFIO_BROKER_FD_SOCKET;
  // On the workload protocol with fd.sock named, the broker socket is needed only by a gRPC-only call.
  const missing = transport === "workload" && explicit ? undefined : socketMissing(socket);
  if (missing) throw missing;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  if (transport === "workload") {
    const relay = new Relay(0);
    const name = opts.clientName ?? "vfio-broker-node";
    let channel: WorkloadChannel;
    try {
      channel = await openWorkload(socket, explicit, name, relay, timeoutMs);
    } catch (e) {
      throw toClientError(e, "Hello");
    }
    return new BrokerClient({ kind: "workload", channel, relay }, socket, opts);
  }
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
  const client = new BrokerClient({ kind: "grpc", rpc, hello }, socket, opts);
  if (opts.lease !== false) {
    try {
      await client.openLease(timeoutMs);
    } catch (e) {
      rpc.close();
      throw toClientError(e, "Lease");
    }
  }
  return client;
}
