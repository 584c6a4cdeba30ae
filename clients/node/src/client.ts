// client.ts: owns BrokerClient, the public facade of one session with brokerd (one
// connection = one session) on either transport: the workload protocol on fd.sock (the default,
// workload-session.ts) or gRPC on broker.sock (grpc-session.ts); connect.ts makes it. It
// keeps the DeviceFiles opened through it and tells listeners what the lease carries
// (events.ts). On a revocation it unmaps the revoked mappings BEFORE telling anyone, so no
// listener can touch revoked memory, and then tells brokerd it has (ReleaseMapping / CloseDevice:
// brokerd keeps the pages booked until then), except for a mapping whose fd it kept to hand on
// (keepFd: another process may still map it); on losing the lease it unmaps everything (the
// broker ended the session). It retries a call once brokerd is back (the resume is the
// transport's). It never speaks a transport's protocol itself: every exchange goes through its
// Session; the transports never call it except through the SessionListener.
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Capabilities, Identity } from "./capabilities.js";
import type { ConnectOptions } from "./connect-options.js";
import { type DeviceInfo, deviceFromPb, type HealthName, type LayoutName } from "./convert.js";
import { type AccessTarget, DeviceFile, type DeviceFileHost } from "./device-file.js";
import { BrokerClientError, toClientError } from "./errors.js";
import type { BrokerClientEvents, RevocationNotice, SessionListener } from "./events.js";
import { FdBatches } from "./fd-batches.js";
import type { FdGrantInit, FdReleaseInit, FetchedFd, GrantResult } from "./fd-channel.js";
import type { Mapping } from "./mapping.js";
import { brokerdGone, isRestart, leaseLossIsRestart } from "./resume.js";
import { type Rpc, type Session, SessionLost } from "./session.js";
import type { Transport } from "./workload-connect.js";

export type { Capabilities, Identity } from "./capabilities.js";
export { type ConnectOptions, DEFAULT_SOCKET } from "./connect-options.js";
export type {
  BrokerClientEvents,
  DeviceHealthEvent,
  LeaseLostEvent,
  ResumedEvent,
  RevocationEvent,
} from "./events.js";

export class BrokerClient extends EventEmitter<BrokerClientEvents> implements DeviceFileHost {
  /** The gRPC socket path this client is connected to. */
  readonly socket: string;
  /** "workload" (the workload protocol on fd.sock) or "grpc" (ConnectOptions.transport). */
  readonly transport: Transport;
  readonly serverVersion: string;
  readonly apiVersion: string;
  /** Who the kernel says this process is (as brokerd sees it). */
  readonly identity: Identity;
  readonly sessionId: string;
  readonly capabilities: Capabilities;
  readonly #session: Session;
  readonly #opts: ConnectOptions;
  #resuming: Promise<void> | undefined;
  /**
   * Connection generation: +1 at each resume. An error from an older generation's connection
   * (a late lease loss, a call that was in flight) means "retry", never "resume again": a second
   * resume would replace the connection that just got the session back.
   */
  #gen = 0;
  readonly #deviceFiles = new Map<bigint, DeviceFile>();
  #closed = false;
  #closing: Promise<void> | undefined;
  readonly #batches: FdBatches;

  /** @internal Use connect(). */
  constructor(session: Session, socket: string, opts: ConnectOptions = {}) {
    super();
    this.#session = session;
    this.#opts = opts;
    this.socket = socket;
    this.transport = session.transport;
    const { sessionId, serverVersion, apiVersion, identity, capabilities } = session.info;
    this.sessionId = sessionId;
    this.serverVersion = serverVersion;
    this.apiVersion = apiVersion;
    this.identity = identity;
    this.capabilities = capabilities;
    // Grants and releases, resumed and retried if brokerd restarts under them (request ids make a
    // retried grant return the same mapping).
    this.#batches = new FdBatches(
      () => this.capabilities.maxFdBatchItems,
      (method, batch) => this.#retrying(method, () => this.#session.sendBatch(method, batch)),
    );
    const listener: SessionListener = {
      revocation: (r) => this.#onRevocation(r),
      deviceHealth: (deviceId, health) => this.#onDeviceHealth(deviceId, health),
      lost: (reason, error, endedReason, gen) => this.#onLeaseLost(reason, error, endedReason, gen),
    };
    session.listen(listener);
  }

  /**
   * The fd channel socket path tickets are presented on: the first candidate until the first
   * fetch connects, then the one that accepted.
   */
  get fdSocketPath(): string {
    return this.#session.fdSocketPath;
  }

  /**
   * @internal Session-bound: every call names this client's session (resume.ts); on the workload
   * transport, through its gRPC side session (side-session.ts).
   */
  get rpc(): Rpc {
    return this.#session.rpc;
  }

  /**
   * @internal DeviceFileHost: presents a ticket on this client's fd-channel connection. If brokerd
   * restarts meanwhile, the ticket (kept in its state store) is presented again to the new one.
   */
  fetchFd(ticket: string): Promise<FetchedFd> {
    return this.#retrying("FetchFd", () => this.#session.fetchFd(ticket));
  }

  /**
   * @internal DeviceFileHost: grants and releases go through the fd channel's batches (see
   * ConnectOptions.fdGrants); a brokerd without them is used through gRPC.
   */
  get fdGrants(): boolean {
    return this.#session.fdGrants;
  }

  /** @internal DeviceFileHost: grants in one FdBatch (fd-batches.ts). */
  fdGrant(grants: FdGrantInit[]): Promise<GrantResult[]> {
    return this.#batches.grant(grants);
  }

  /** @internal DeviceFileHost: a release, batched with the next grant or the others of this turn. */
  fdRelease(release: FdReleaseInit): Promise<void> {
    return this.#batches.release(release);
  }

  get #autoResume(): boolean {
    return this.#opts.autoResume !== false && this.#session.resumable;
  }

  get maxAccessBytes(): number {
    return this.capabilities.maxAccessBytes;
  }

  /**
   * true while the lease is held: the gRPC Lease stream is open, or on the workload transport the
   * connection is (false without a gRPC lease, after close() or losing it).
   */
  get leaseActive(): boolean {
    return !this.#closed && this.#session.leaseActive;
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
    const gen = this.#gen + 1;
    let attempts: number | undefined;
    try {
      attempts = await this.#session.resume({
        cause,
        deadline: t0 + (this.#opts.resumeTimeoutMs ?? 60_000),
        gen,
        live: () => !this.#closed,
        back: (held) => {
          this.#gen = gen;
          this.#dropWhatIsNotHeld(held);
        },
      });
    } catch (e) {
      if (!(e instanceof SessionLost)) throw e;
      this.#lose(e.reason, e.error);
      throw e.error;
    }
    if (attempts === undefined) return;
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

  /** Devices this identity may open under the broker's policy. */
  async devices(): Promise<DeviceInfo[]> {
    const list = await this.call("ListDevices", () => this.#session.listDevices());
    if (list) return list;
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
    const res = await this.call("OpenDevice", () =>
      this.#session.openDevice(deviceId, opts.layout, requestId),
    );
    const df = new DeviceFile(this, res);
    this.#deviceFiles.set(df.id, df);
    return df;
  }

  /** @internal DeviceFileHost: CloseDevice, on the session's own transport. */
  async closeDevice(df: DeviceFile): Promise<void> {
    await this.call<unknown>("CloseDevice", () => this.#session.closeDevice(df.id), { idempotent: true });
  }

  /**
   * @internal DeviceFileHost: where ReadRegion/WriteRegion on df go. gRPC: this session. Workload:
   * df's shadow in the side session (side-session.ts), whose offsets are region space only.
   */
  access(df: DeviceFile): Promise<AccessTarget> {
    return this.#session.access(df);
  }

  /** Releases everything (unmaps, closes device files), ends the lease and the connection. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const errors: unknown[] = [];
    // Closing the device files releases everything on brokerd: releases still waiting are done.
    this.#batches.settleWaiting();
    for (const df of [...this.#deviceFiles.values()]) {
      try {
        await df.close();
      } catch (e) {
        errors.push(e);
      }
    }
    this.#closed = true;
    this.#session.close();
    // brokerd gone or the session already ended: there is nothing left to release.
    const gone = (e: unknown) =>
      brokerdGone(e) || (e instanceof BrokerClientError && e.code === "UNAVAILABLE");
    if (errors.length > 0 && !gone(errors[0])) throw errors[0];
  }

  /** @internal DeviceFileHost */
  deviceFileClosed(df: DeviceFile): void {
    this.#deviceFiles.delete(df.id);
    this.#session.forget(df.id);
  }

  #onDeviceHealth(deviceId: string, health: HealthName): void {
    this.emit("deviceHealth", { deviceId, health });
  }

  /** A Revocation came down the lease: unmap first, then tell listeners. */
  #onRevocation(r: RevocationNotice): void {
    const df = this.#deviceFiles.get(r.deviceFileId);
    const mappings = df ? df.revoke(r.cookie, r.reason) : [];
    // Unmapped: tell brokerd, which keeps the pages booked until the holder says so (or exits).
    // Not for a mapping whose fd was kept to hand on (keepFd): another process may still map it,
    // so its pages stay booked until this process releases it, closes the device file or exits.
    if (mappings.length > 0 && !mappings.some((m) => m.keepsFd)) {
      const { deviceFileId, cookie } = r;
      const s = this.#session;
      const ack = cookie === 0n ? s.closeDevice(deviceFileId) : s.releaseMapping(deviceFileId, cookie);
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
   * The lease is gone. If brokerd is restarting (LeaseEnded "restart", or the connection
   * dropped), the session is resumed and nothing is unmapped; else the session and every grant in
   * it are gone.
   */
  #onLeaseLost(reason: string, error: Error | undefined, endedReason: string | undefined, gen: number): void {
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
