// Broker: the core of brokerd. It owns sessions, device files, mappings, tickets and the policy,
// and enforces every rule: policy, limits, ranges, attribute conflicts. It knows nothing of gRPC
// or sockets: the rpc/ and fdpass/ layers call it with a Session (a kernel-verified identity) and
// translate BrokerError into gRPC statuses. It emits events for metrics and the audit journal.

import { createHash, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { closeFd, pidfdAlive, pidfdSendSignal, type Watch, watchPidfd } from "@vfio-broker/native";
import type {
  Attribute,
  AttributeCheck,
  Backend,
  Backing,
  DeviceHealth,
  DeviceInfo,
  Prot,
  RegionInfo,
} from "./devices/backend.js";
import { hex } from "./devices/regions.js";
import {
  BrokerError,
  denied,
  exhausted,
  invalid,
  notFound,
  precondition,
  quoted,
  unavailable,
} from "./errors.js";
import { AttributeMap } from "./grants/attribute-map.js";
import { DeviceFile, type Mapping } from "./grants/device-file.js";
import { DEFAULT_RESERVE_PERCENT, explainRefusal, type FairShare, tenantShare } from "./grants/fair-share.js";
import {
  type Enforcement,
  enforcementFor,
  type Hold,
  HoldBook,
  heldMessage,
  holderKey,
  liveRevocation,
  type RevocationView,
  staysBooked,
} from "./grants/holds.js";
import type { Layout } from "./grants/layout.js";
import { QuotaBook } from "./grants/quota.js";
import { checkAccess, checkMappingRange } from "./grants/range.js";
import { holderOf, type RedeemFailure, TicketBook } from "./grants/tickets.js";
import { quotaKeys } from "./identity/container.js";
import { describeIdentity, openIfSameProcess, type PeerIdentity, processStartTime } from "./identity/peer.js";
import { type LeaseEvent, MAX_MISSED_EVENTS, Session } from "./identity/session.js";
import { describeTenant, type Tenant, TenantMap } from "./identity/subuid.js";
import { logLimited } from "./log.js";
import {
  authorizeAccess,
  authorizeDevice,
  authorizeIdentity,
  authorizeMapping,
  type Decision,
  limitsFor,
  type Policy,
  type Rule,
  UNNAMED_LIMITS,
} from "./policy/index.js";
import { HandoverGate } from "./restart/gate.js";

export const VERSION = "0.1.0";

export interface BrokerOptions {
  backends: Backend[];
  policy: Policy;
  pageSize: bigint;
  ticketTtlMs: number;
  /** Global cap on sessions (connections on broker.sock), over all identities. */
  maxSessions: number;
  /** Global cap on mappings waiting for delivery (each holds a backing fd), over all identities. */
  maxPendingMappings?: number;
  /** Which tenant (user) each uid belongs to (/etc/subuid); default: every uid its own tenant. */
  tenants?: TenantMap;
  /** Percent of each global cap kept for tenants below their minimum (grants/fair-share.ts). */
  tenantReservePercent?: number;
  /** A session with no lease and no mapping is ended after this long without a call. */
  idleTimeoutMs?: number;
  maxAccessBytes: number;
  fdSocketPath: string;
  /**
   * The fd socket's file name relative to the broker socket's directory ("" when they are in
   * different directories): a client in a container finds it next to the broker socket it mounted.
   */
  fdSocketName?: string;
  /** How often the sweep (expired tickets, idle sessions) runs. */
  sweepIntervalMs?: number;
  /** How long a session restored after a restart waits for its client to resume it (ms). */
  resumeGraceMs?: number;
  /** The initial onSessionEnded (the transport that closes a session's connection). */
  onSessionEnded?: (s: Session, flushed: Promise<void>) => void;
}

export const DEFAULT_RESUME_GRACE_MS = 30_000;

/** sha256 of a resume token: what the state store and the session keep instead of the token. */
export function tokenHash(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export const DEFAULT_MAX_PENDING_MAPPINGS = 1024;
/**
 * Holder processes of revoked mappings watched by pidfd (one fd each, out of fd-budget.ts's
 * RESERVE_FDS); beyond, the sweep polls their /proc start time (no fd).
 */
export const MAX_WATCHED_HOLDERS = 64;
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

export interface BrokerEvents {
  "session.open": [Session];
  "session.end": [Session, string, number];
  "devicefile.open": [DeviceFile];
  "devicefile.close": [DeviceFile, string];
  "mapping.create": [Mapping, number];
  /**
   * The fast path's grant: a mapping created and delivered to `peer` at once (no ticket). Stands
   * for "mapping.create" + an ok "fd.delivery": one state record and one journal line.
   */
  "mapping.grant": [Mapping, number, FdPeer];
  /** SetMappingAttribute changed a pending mapping's attribute (and its backing). */
  "mapping.update": [Mapping];
  /** A session restored after a restart was taken up again by its process (the fresh one it replaced). */
  "session.resume": [Session, Session];
  "mapping.release": [Mapping, string];
  /**
   * A CreateMapping took another reference on an existing mapping ("add"), or a ReleaseMapping
   * gave one back without it ending ("drop"); Mapping.refs is the new count.
   */
  "mapping.refs": [Mapping, "add" | "drop"];
  /** CreateMapping failed: gRPC code name and the error's low-cardinality reason. */
  "mapping.refused": [string, string];
  /** An fd-channel request: result, the mapping (when known), ms, and the kernel-verified peer. */
  "fd.delivery": [string, Mapping | undefined, number, FdPeer | undefined];
  /** A reply carrying fds could not be sent: errno label (fdpass/delivery-failure.ts), the peer. */
  "fd.undeliverable": [string, FdPeer];
  /**
   * A connection refused before it got a session or a slot (quota, global cap, draining, not an
   * admin): which socket ("broker", "fd", "admin"), the kernel-verified peer, and a low-cardinality
   * reason such as "limit:sessions". Attackers repeat these, so the journal aggregates them.
   */
  "connection.refused": [string, FdPeer, string];
  denied: [Session | undefined, string, string];
  revocation: [string, number];
  /**
   * A delivered mapping was revoked (or its session ended) while its holder may still map it: it
   * is held (state "revoking"), its pages and quota stay booked until the holder releases it or
   * exits. Fires before the mapping's "mapping.release" (the state store keeps the booking).
   */
  "mapping.hold": [Hold];
  /** A hold ended: "release" (the holder released it), "exit" (its process exited). */
  "mapping.unhold": [Hold, string];
  /**
   * brokerd enforced a revocation: SIGKILL through the holder's pidfd. result: "killed", "gone"
   * (it had exited), "error:<code>" (EPERM without CAP_KILL).
   */
  "mapping.revoke.enforced": [Hold[], string];
  "policy.reload": [boolean, string[]];
  "device.health": [string, DeviceHealth];
}

/** The kernel-verified peer of a connection (SO_PEERCRED), as far as events need it. */
export interface FdPeer {
  uid: number;
  pid: number;
}

export interface CreateMappingArgs {
  deviceFileId: bigint;
  regionIndex: number;
  offset: bigint;
  length: bigint;
  attribute: Attribute | undefined;
  prot: Prot | undefined;
  allowFallback: boolean;
  /** The client's id for this call: a retry with the same id returns the same mapping. */
  requestId?: string;
}

/** Refused while brokerd restarts or hands over: nothing was done; resume with Hello and retry. */
function restarting(): BrokerError {
  return unavailable(
    "brokerd is restarting and keeps your grants; resume with Hello and retry",
    "restarting",
  );
}

/** A state-store write failed: the change was undone, and the client is told why. */
function storeFailed(e: unknown): BrokerError {
  if (e instanceof BrokerError) return e;
  return unavailable(
    `brokerd cannot record this in its state store (${(e as Error).message}); nothing was granted. ` +
      "An operator must free space under the state directory",
    "store_failed",
  );
}

export type Delivery =
  | { ok: true; mapping: Mapping }
  | { ok: false; status: RedeemFailure | "revoked" | "internal"; message: string; mapping?: Mapping };

/** Where records go (the state store, the journal), able to hold them for one batch. */
export interface Recorder {
  cork(): void;
  /** Writes what was held; throws if that failed (the state store), or never (the journal). */
  uncork(): void;
}

/** What CreateMapping gives: the mapping, and a ticket for its fd ("" if none is needed or left). */
export interface Grant {
  mapping: Mapping;
  ticket: string;
  expiresAt: number;
  /** Created and delivered at once (createMapping's deliverTo): the caller sends the fd now. */
  delivered?: boolean;
}

export interface RevokeCounts {
  mappingsRevoked: number;
  deviceFilesClosed: number;
  sessionsEnded: number;
  /** Of the mappings revoked, those whose holder may still map them: held until it unmaps or exits. */
  mappingsHeld?: number;
}

export class Broker extends EventEmitter<BrokerEvents> {
  readonly sessions = new Map<string, Session>();
  /** Sessions by the sha256 of their resume token (resume, and grants on the fd channel). */
  readonly sessionsByToken = new Map<string, Session>();
  /**
   * The same by the token itself, for the tokens this brokerd has seen (issued, or presented in a
   * resume): a grant on the fd channel then costs a map lookup, not a sha256.
   */
  private readonly sessionsByPlainToken = new Map<string, Session>();
  readonly startedAt = Date.now();
  readonly tickets: TicketBook<Mapping>;
  private readonly recorders: Recorder[] = [];
  /** What every identity holds across its sessions (sessions, device files, mappings, bytes, ...). */
  readonly quotas = new QuotaBook();
  /** Which tenant each uid belongs to; replaced on SIGHUP (setTenants). */
  tenants: TenantMap;
  /**
   * The global caps, shared fairly among tenants (grants/fair-share.ts): session slots, and
   * mappings created and not yet delivered (each holds a backing fd).
   */
  readonly shares: { sessions: FairShare; pendingMappings: FairShare };
  /** The tenant each pending mapping's unit was taken for (its session may be gone when it settles). */
  private readonly pendingTenant = new WeakMap<Mapping, string>();
  /**
   * The fd channel's count of fds in replies its peers have not read yet (in flight in the kernel,
   * or held by brokerd while a send would block), and of connections it does not read from until
   * their peers read (fdpass/channel.ts keeps both; metrics read them).
   */
  readonly fdReplies = { unreadFds: 0, heldFds: 0, pausedConnections: 0 };
  private policyValue: Policy;
  readonly deviceHealth = new Map<string, DeviceHealth>();
  private readonly attributeMaps = new Map<string, AttributeMap>();
  /** Revoked mappings whose holder may still map them (state "revoking"): their pages stay booked. */
  readonly holds = new HoldBook();
  /**
   * The exit watch of each holder process with holds (key: holderKey): one fd each, for at most
   * MAX_WATCHED_HOLDERS of them; the others (undefined) are looked up in /proc by the sweep.
   */
  private readonly holders = new Map<string, Watch | undefined>();
  private watchedHolders = 0;
  /** Holds made so far (RevokeCounts.mappingsHeld is the difference over one revocation). */
  private holdsMade = 0;
  /** The operator's enforcement for the revocation in progress (revokeMapping/revokeSession). */
  private enforcing: Enforcement | undefined;
  /** The policy before the last reload: the rule a revoked mapping was granted under may be gone. */
  private previousPolicy: Policy | undefined;
  /** Device-file ids continue across runs (the state store keeps the counter). */
  nextDeviceFileId = 1n;
  /** Sessions restored after a restart and not resumed yet (not counted against --max-sessions). */
  detachedCount = 0;
  /**
   * Set while brokerd hands over to its successor or stops keeping grants: the state is final,
   * so every call is refused (UNAVAILABLE, reason "restarting") and the client retries there.
   */
  frozen = false;
  /** Held shut while a hand-over is in progress: calls wait on it instead of being refused. */
  readonly handover = new HandoverGate();
  private readonly sweepTimer: NodeJS.Timeout;
  /**
   * Called when a session ends, so the transport can close the connection; `flushed` settles once
   * the lease's last event (LeaseEnded) is on its way, so the connection closes after it.
   */
  onSessionEnded: (s: Session, flushed: Promise<void>) => void = () => {};

  constructor(readonly opts: BrokerOptions) {
    super();
    this.policyValue = opts.policy;
    this.tenants = opts.tenants ?? new TenantMap();
    const reserve = opts.tenantReservePercent ?? DEFAULT_RESERVE_PERCENT;
    this.shares = {
      sessions: tenantShare(opts.maxSessions, reserve),
      pendingMappings: tenantShare(opts.maxPendingMappings ?? DEFAULT_MAX_PENDING_MAPPINGS, reserve),
    };
    this.tickets = new TicketBook<Mapping>(opts.ticketTtlMs);
    for (const b of opts.backends) b.onDeviceGone((id) => this.deviceGone(id));
    this.sweepTimer = setInterval(() => this.sweep(), opts.sweepIntervalMs ?? 500);
    this.sweepTimer.unref();
    if (opts.onSessionEnded) this.onSessionEnded = opts.onSessionEnded;
  }

  get policy(): Policy {
    return this.policyValue;
  }

  /** Mappings created and not yet delivered, over all sessions (each holds a backing fd). */
  get pendingMappings(): number {
    return this.shares.pendingMappings.total;
  }

  /** The tenant of uid, as the tenant map says now (a session keeps the one it opened with). */
  tenantOf(uid: number): Tenant {
    return this.tenants.tenantOf(uid);
  }

  /** A re-read /etc/subuid: sessions opened from now on are charged to the tenants it names. */
  setTenants(map: TenantMap): void {
    this.tenants = map;
  }

  /**
   * Installs a new policy and revokes, with reason "policy" on the lease, what it no longer allows:
   * sessions of identities it does not name, device files of devices they may no longer open, and
   * mappings whose region, attribute or prot it no longer allows. Quotas lowered by the new policy
   * take effect on new requests only (nothing live is taken away for a quota).
   */
  setPolicy(p: Policy): RevokeCounts {
    this.previousPolicy = this.policyValue;
    this.policyValue = p;
    const held0 = this.holdsMade;
    const counts: RevokeCounts = { mappingsRevoked: 0, deviceFilesClosed: 0, sessionsEnded: 0 };
    for (const s of [...this.sessions.values()]) {
      const who = authorizeIdentity(p, s.identity);
      if (!who.allow) {
        counts.mappingsRevoked += s.mappingCount;
        counts.deviceFilesClosed += s.deviceFiles.size;
        counts.sessionsEnded++;
        this.revokeAllOf(s, "policy", `the reloaded policy no longer allows you: ${who.message}`);
        this.endSession(s, "policy", `the reloaded policy no longer allows ${describeIdentity(s.identity)}`);
        continue;
      }
      for (const df of [...s.deviceFiles.values()]) {
        const dev = authorizeDevice(p, s.identity, df.device.id);
        if (!dev.allow) {
          this.notifyRevocation(
            s,
            df,
            0n,
            "policy",
            `the reloaded policy no longer allows device ${df.device.id}: ${dev.message}`,
          );
          counts.mappingsRevoked += this.closeDeviceFile(s, df, "policy");
          counts.deviceFilesClosed++;
          continue;
        }
        for (const m of [...df.mappings.values()]) {
          const d = authorizeMapping(p, s.identity, {
            device: df.device.id,
            region: m.region.name,
            attribute: m.effectiveAttribute,
            prot: m.prot,
          });
          if (d.allow) continue;
          this.dropMapping(s, m, "policy");
          this.notifyRevocation(
            s,
            df,
            m.cookie,
            "policy",
            `the reloaded policy no longer allows this mapping: ${d.message}`,
          );
          counts.mappingsRevoked++;
        }
      }
    }
    this.emit("policy.reload", true, []);
    if (counts.mappingsRevoked > 0 || counts.sessionsEnded > 0 || counts.deviceFilesClosed > 0)
      this.emit("revocation", "policy", counts.mappingsRevoked);
    counts.mappingsHeld = this.holdsMade - held0;
    return counts;
  }

  // ---- devices ---------------------------------------------------------------------------------

  allDevices(): { info: DeviceInfo; backend: Backend; health: DeviceHealth }[] {
    const out: { info: DeviceInfo; backend: Backend; health: DeviceHealth }[] = [];
    for (const backend of this.opts.backends)
      for (const info of backend.devices())
        out.push({ info, backend, health: this.deviceHealth.get(info.id) ?? "healthy" });
    return out;
  }

  device(id: string): { info: DeviceInfo; backend: Backend; health: DeviceHealth } {
    const d = this.allDevices().find((x) => x.info.id === id);
    if (!d)
      throw notFound(`no device ${quoted(id)}; ListDevices shows the devices you may open`, "unknown_device");
    return d;
  }

  healthOf(id: string): DeviceHealth {
    return this.deviceHealth.get(id) ?? "healthy";
  }

  attributeMap(deviceId: string): AttributeMap {
    let m = this.attributeMaps.get(deviceId);
    if (!m) {
      m = new AttributeMap(deviceId, this.opts.pageSize);
      this.attributeMaps.set(deviceId, m);
    }
    return m;
  }

  // ---- sessions --------------------------------------------------------------------------------

  openSession(identity: PeerIdentity): Session {
    // On refusal the caller still owns identity.pidfd (and closes it).
    const tenant = this.tenantOf(identity.uid);
    // Its tenant's fair share of brokerd's sessions first, then the identity's own quota.
    const v = this.shares.sessions.check(tenant.key);
    if (!v.ok)
      throw exhausted(
        explainRefusal(
          this.shares.sessions,
          v,
          describeTenant(identity.uid, tenant),
          "sessions",
          "close a connection first",
        ),
        "limit:global_sessions",
      );
    const keys = quotaKeys(identity);
    // The identity's slot: its first matching rule's sessions quota (a few for identities no rule names).
    this.quotas.charge(keys, "sessions", 1, limitsFor(this.policy, identity).sessions, `uid ${identity.uid}`);
    this.shares.sessions.acquire(tenant.key);
    const token = randomBytes(16).toString("hex");
    const s = new Session(randomBytes(8).toString("hex"), identity, keys, tokenHash(token), token, tenant);
    this.sessions.set(s.id, s);
    this.sessionsByToken.set(s.tokenHash, s);
    this.sessionsByPlainToken.set(token, s);
    try {
      // Listeners record it first (state store): a failed write refuses the connection.
      this.emit("session.open", s);
    } catch (e) {
      this.sessions.delete(s.id);
      this.sessionsByToken.delete(s.tokenHash);
      this.sessionsByPlainToken.delete(token);
      this.quotas.refund(keys, "sessions", 1);
      this.shares.sessions.release(tenant.key);
      throw storeFailed(e);
    }
    // The process exiting ends the session even if the connection lingers (e.g. inherited by a child).
    s.pidWatch = watchPidfd(identity.pidfd, () => this.endSession(s, "process-exit"));
    return s;
  }

  /**
   * Releases everything the session holds and ends its lease with LeaseEnded{reason, message}.
   * Idempotent. The session's quota slot stays taken until its connection closes (releaseSlot).
   */
  endSession(s: Session, reason: string, message = ""): void {
    if (s.ended) return;
    const t0 = performance.now();
    s.ended = true;
    this.undetach(s);
    // Its releases' records and journal lines go in few writes, not two per mapping (a client
    // SIGKILLed with 100,000 mappings). Nobody waits on them: a failed write is logged, as a
    // failed release record always is.
    this.batchQuietly(() => {
      for (const df of [...s.deviceFiles.values()]) this.closeDeviceFile(s, df, reason);
    });
    s.pidWatch?.close();
    closeFd(s.identity.pidfd);
    this.sessions.delete(s.id);
    if (this.sessionsByToken.get(s.tokenHash) === s) this.sessionsByToken.delete(s.tokenHash);
    if (this.sessionsByPlainToken.get(s.resumeToken) === s) this.sessionsByPlainToken.delete(s.resumeToken);
    const flushed = s.lease
      ? s.lease.end(reason, message || `the session ended: ${reason}`)
      : Promise.resolve();
    s.lease = undefined;
    this.emit("session.end", s, reason, performance.now() - t0);
    this.onSessionEnded(s, flushed);
  }

  /**
   * uid already holds as many sessions as any rule could allow it (gid and cgroup unknown yet), or
   * its tenant (known from the uid alone) may take no more of brokerd's sessions now, so no
   * connection of it can be admitted now.
   */
  sessionsExhausted(uid: number): boolean {
    if (!this.shares.sessions.check(this.tenantOf(uid).key).ok) return true;
    let most = UNNAMED_LIMITS.sessions;
    for (const r of this.policy.rules)
      if (r.match.any || !r.match.uids || r.match.uids.includes(uid))
        most = Math.max(most, r.limits.sessions);
    return this.quotas.usage(`uid:${uid}`).sessions >= most;
  }

  /** The session's connection closed: its identity and tenant may use the slot again. Idempotent. */
  releaseSlot(s: Session): void {
    if (!s.slotHeld) return;
    s.slotHeld = false;
    this.quotas.refund(s.quotaKeys, "sessions", 1);
    this.shares.sessions.release(s.tenant.key);
  }

  private decide(s: Session, d: Decision): void {
    if (!d.allow) {
      this.emit("denied", s, d.reason, d.message);
      throw denied(d.message, `policy:${d.reason}`);
    }
  }

  /** The session must be alive; every call counts as activity for the idle timeout. */
  private live(s: Session): void {
    if (this.frozen) throw restarting();
    if (s.ended) throw unavailable("this session has ended; reconnect", "session_ended");
    s.lastActiveAt = Date.now();
  }

  /** Every call starts here: the identity must be named by the policy, and the session alive. */
  authorize(s: Session): void {
    this.live(s);
    this.decide(s, authorizeIdentity(this.policy, s.identity));
  }

  // ---- BrokerService ---------------------------------------------------------------------------

  listDevices(s: Session): { info: DeviceInfo; health: DeviceHealth }[] {
    this.authorize(s);
    return this.allDevices().filter((d) => authorizeDevice(this.policy, s.identity, d.info.id).allow);
  }

  getDevice(s: Session, id: string): { info: DeviceInfo; health: DeviceHealth } {
    this.authorize(s);
    const d = this.device(id);
    this.decide(s, authorizeDevice(this.policy, s.identity, id));
    return d;
  }

  openDevice(s: Session, deviceId: string, layout: Layout, requestId = ""): DeviceFile {
    this.authorize(s);
    const againId = requestId === "" ? undefined : s.requests.get(requestId)?.deviceFileId;
    const again = againId === undefined ? undefined : s.deviceFiles.get(againId);
    if (again) return again;
    const d = this.device(deviceId);
    this.decide(s, authorizeDevice(this.policy, s.identity, deviceId));
    if (d.health !== "healthy")
      throw unavailable(
        `device ${deviceId} is ${d.health}; an operator must undrain it first`,
        `device_${d.health}`,
      );
    const limits = limitsFor(this.policy, s.identity, deviceId);
    this.quotas.charge(s.quotaKeys, "deviceFiles", 1, limits.deviceFiles, s.who);
    const df = new DeviceFile(this.nextDeviceFileId++, s.id, d.info, layout, this.opts.pageSize);
    df.requestId = requestId;
    s.deviceFiles.set(df.id, df);
    try {
      this.emit("devicefile.open", df);
    } catch (e) {
      s.deviceFiles.delete(df.id);
      this.quotas.refund(s.quotaKeys, "deviceFiles", 1);
      throw storeFailed(e);
    }
    s.remember(requestId, { deviceFileId: df.id });
    return df;
  }

  deviceFile(s: Session, id: bigint): DeviceFile {
    this.authorize(s);
    return this.ownDeviceFile(s, id);
  }

  /**
   * One of the session's own device files, with no policy check: releasing and closing what a
   * session holds is always allowed, whatever the policy says now.
   */
  private ownDeviceFile(s: Session, id: bigint): DeviceFile {
    this.live(s);
    const df = s.deviceFiles.get(id);
    if (!df) {
      // Holding nothing by that id: an identity the policy does not name hears that first.
      this.authorize(s);
      throw notFound(
        `no device file ${id} in this session; OpenDevice returns the id to use`,
        "unknown_device_file",
      );
    }
    return df;
  }

  regionInfo(s: Session, dfId: bigint, index: number): { region: RegionInfo; cookie: bigint } {
    const df = this.deviceFile(s, dfId);
    return { region: df.region(index), cookie: df.regionCookie(index) };
  }

  /** A state store or journal that can hold what it writes until the end of a batch. */
  addRecorder(r: Recorder): void {
    this.recorders.push(r);
  }

  /**
   * Runs fn with every state record and journal line it causes held and written at its end, one
   * write(2) each (an fd-channel batch). If the state records cannot be written this throws
   * UNAVAILABLE store_failed after fn ran: its effects stay, and the caller undoes them (releases
   * what it granted) before replying.
   */
  batch<T>(fn: () => T): T {
    for (const r of this.recorders) r.cork();
    let failed: unknown;
    let out: T;
    try {
      out = fn();
    } finally {
      for (const r of this.recorders)
        try {
          r.uncork();
        } catch (e) {
          failed ??= e;
        }
    }
    if (failed !== undefined) throw storeFailed(failed);
    return out;
  }

  /** batch() for releases only: a failure to write their records is logged, never thrown. */
  private batchQuietly(fn: () => void): void {
    try {
      this.batch(fn);
    } catch (e) {
      if (!(e instanceof BrokerError)) throw e;
      logLimited("state.write", `vfio-brokerd: state store: recording releases failed: ${e.message}`);
    }
  }

  /**
   * CreateMapping. With `deliverTo` (the fd channel's fast path, whose reply carries the fd) a new
   * mapping is created delivered, with no ticket (`delivered` true); a retried or shared one comes
   * back with its ticket (or "" when delivered already) as on the gRPC path.
   */
  createMapping(s: Session, a: CreateMappingArgs, deliverTo?: FdPeer): Grant {
    try {
      const again = this.retried(s, a);
      if (again) return again;
      return this.grant(s, a, deliverTo);
    } catch (e) {
      if (e instanceof BrokerError) this.emit("mapping.refused", e.code, e.reason);
      throw e;
    }
  }

  /** The mapping an earlier try of this CreateMapping (same request id) made, if it is still held. */
  private retried(s: Session, a: CreateMappingArgs): Grant | undefined {
    const made = a.requestId ? s.requests.get(a.requestId) : undefined;
    if (made?.cookie === undefined) return undefined;
    const df = this.deviceFile(s, a.deviceFileId);
    const m = df.mappings.get(made.cookie);
    if (!m) return undefined;
    return { mapping: m, ticket: m.state === "pending" ? m.ticket : "", expiresAt: m.ticketExpiresAt };
  }

  /** The region can have `attribute` at all (or UC instead, when fallback is allowed). */
  private checkCapability(
    df: DeviceFile,
    region: RegionInfo,
    attribute: Attribute,
    allowFallback: boolean,
  ): void {
    if (!region.attributes.includes(attribute) && !(allowFallback && region.attributes.includes("UC")))
      throw invalid(
        `${df.device.id} ${region.name} cannot be mapped ${attribute}: it allows ${region.attributes.join(", ")}` +
          `${region.prefetchable ? "" : " (it is not a prefetchable BAR)"}; request ${region.attributes[0] ?? "UC"}, or set allow_fallback`,
        "attribute_unsupported",
      );
  }

  /** The policy rule that lets this session map region with attribute and prot (PERMISSION_DENIED if none). */
  private mappingRule(
    s: Session,
    df: DeviceFile,
    region: RegionInfo,
    attribute: Attribute,
    prot: Prot,
  ): Rule {
    const d = authorizeMapping(this.policy, s.identity, {
      device: df.device.id,
      region: region.name,
      attribute,
      prot,
    });
    this.decide(s, d);
    return (d as { rule: Rule }).rule;
  }

  /**
   * Opens the backend's backing for a range, under the rule that allowed the request; when the
   * backend fell back to another attribute, the policy must allow that one too. The backing is
   * the caller's to release if anything later fails.
   */
  private openBacking(
    s: Session,
    df: DeviceFile,
    region: RegionInfo,
    range: { offset: bigint; length: bigint; attribute: Attribute; prot: Prot; allowFallback: boolean },
    rule: Rule,
  ): Backing {
    const backing = this.device(df.device.id).backend.openBacking({
      deviceId: df.device.id,
      region,
      ...range,
      allowDeviceFd: rule.allowDeviceFd,
    });
    try {
      if (backing.effectiveAttribute !== range.attribute)
        this.mappingRule(s, df, region, backing.effectiveAttribute, range.prot);
    } catch (e) {
      backing.release();
      throw e;
    }
    return backing;
  }

  private grant(s: Session, a: CreateMappingArgs, deliverTo?: FdPeer): Grant {
    const t0 = performance.now();
    const df = this.deviceFile(s, a.deviceFileId);
    const region = df.region(a.regionIndex);
    const { attribute, prot } = a;
    if (!attribute) throw invalid("attribute is required: ATTRIBUTE_UC or ATTRIBUTE_WC", "attribute_missing");
    if (!prot) throw invalid("prot is required: PROT_READ or PROT_READ_WRITE", "prot_missing");
    checkMappingRange(df.device.id, region, a.offset, a.length, this.opts.pageSize);
    this.checkCapability(df, region, attribute, a.allowFallback);
    if (prot === "rw" && !region.writable)
      throw invalid(`${region.name} is read-only; request PROT_READ`, "prot");
    const health = this.healthOf(df.device.id);
    if (health !== "healthy")
      throw unavailable(`device ${df.device.id} is ${health}; no new mappings`, `device_${health}`);
    const rule = this.mappingRule(s, df, region, attribute, prot);
    const same = df.sharedMapping(region.index, a.offset, a.length, attribute, prot);
    if (same && (a.allowFallback || same.effectiveAttribute === attribute))
      return this.addReference(s, same, rule, a.requestId ?? "");
    let issued = { ticket: "", expiresAt: 0 };
    const m = this.chargeMapping(s, a.length, rule, () => {
      const attrs = this.attributeMap(df.device.id);
      // The effective attribute decides the PAT conflict; the backend tells us which one it is.
      const backing = this.openBacking(s, df, region, { ...a, attribute, prot }, rule);
      try {
        this.checkPages(attrs, region, a.offset, a.length, backing.effectiveAttribute);
        attrs.acquire(region.index, a.offset, a.length, backing.effectiveAttribute);
      } catch (e) {
        backing.release();
        throw e;
      }
      try {
        return df.addMapping((cookie) => {
          const mapping: Mapping = {
            cookie,
            deviceFile: df,
            region,
            regionOffset: a.offset,
            length: a.length,
            requestedAttribute: attribute,
            effectiveAttribute: backing.effectiveAttribute,
            fallbackReason: backing.fallbackReason,
            prot,
            backing,
            state: "pending",
            ticket: "",
            rule: rule.name,
            createdAt: Date.now(),
            requestId: a.requestId ?? "",
            ticketExpiresAt: 0,
            refs: 1,
          };
          if (deliverTo) return mapping;
          issued = this.tickets.issue(mapping, holderOf(s));
          mapping.ticket = issued.ticket;
          mapping.ticketExpiresAt = issued.expiresAt;
          return mapping;
        }, a.length);
      } catch (e) {
        // The cookie space is full (or the tree refused): give back the booking and the fd.
        attrs.release(region.index, a.offset, a.length);
        backing.release();
        throw e;
      }
    });
    if (deliverTo) {
      // Its fd goes out in this very reply: it is never pending.
      this.settlePending(s, m);
      m.state = "delivered";
    }
    try {
      // The state store records it here, before the reply carries the ticket (or the fd).
      if (deliverTo) this.emit("mapping.grant", m, performance.now() - t0, deliverTo);
      else this.emit("mapping.create", m, performance.now() - t0);
    } catch (e) {
      this.dropMapping(s, m, "store-failed");
      throw storeFailed(e);
    }
    s.remember(a.requestId ?? "", { cookie: m.cookie });
    return { mapping: m, ticket: issued.ticket, expiresAt: issued.expiresAt, delivered: !!deliverTo };
  }

  /**
   * The same range, attribute and prot again in the same device file: the existing cookie with one
   * more reference (the kernel RFC review's rule), not a new alias. Each reference counts against
   * the mappings quota and needs its own ReleaseMapping; no bytes are charged twice, since no new
   * memory is exposed. The reply carries a fresh ticket: it delivers the mapping's pending fd, or,
   * once that went out, a fresh fd for the same cookie (redeliver), so every CreateMapping reply
   * lets its caller fetch an fd.
   */
  private addReference(s: Session, m: Mapping, rule: Rule, requestId: string): Grant {
    this.quotas.charge(s.quotaKeys, "mappings", 1, rule.limits.mappings, s.who);
    const before = { ticket: m.ticket, expiresAt: m.ticketExpiresAt };
    const issued = this.tickets.issue(m, holderOf(s));
    m.refs++;
    m.ticket = issued.ticket;
    m.ticketExpiresAt = issued.expiresAt;
    try {
      // Recorded before the reply, like a creation: a restart keeps the count.
      this.emit("mapping.refs", m, "add");
    } catch (e) {
      m.refs--;
      this.tickets.revoke(issued.ticket);
      m.ticket = before.ticket;
      m.ticketExpiresAt = before.expiresAt;
      this.quotas.refund(s.quotaKeys, "mappings", 1);
      throw storeFailed(e);
    }
    s.remember(requestId, { cookie: m.cookie });
    return { mapping: m, ticket: issued.ticket, expiresAt: issued.expiresAt };
  }

  /**
   * Charges one pending mapping of `length` bytes to the session's identity (mappings, bytes,
   * pending, and brokerd's global pending cap: a pending mapping holds a backing fd), then runs
   * open(); refunds everything if anything fails.
   */
  private chargeMapping<T extends Mapping>(s: Session, length: bigint, rule: Rule, open: () => T): T {
    const pool = this.shares.pendingMappings;
    const v = pool.check(s.tenant.key);
    if (!v.ok)
      throw exhausted(
        explainRefusal(
          pool,
          v,
          describeTenant(s.identity.uid, s.tenant),
          "mappings waiting for their fd",
          "fetch the fds of yours (or release them) first",
        ),
        "limit:global_pending",
      );
    const keys = s.quotaKeys;
    const charged: (() => void)[] = [];
    try {
      this.quotas.charge(keys, "mappings", 1, rule.limits.mappings, s.who);
      charged.push(() => this.quotas.refund(keys, "mappings", 1));
      this.quotas.charge(keys, "bytes", length, rule.limits.bytes, s.who);
      charged.push(() => this.quotas.refund(keys, "bytes", length));
      this.quotas.charge(keys, "pendingMappings", 1, rule.limits.pendingMappings, s.who);
      charged.push(() => this.quotas.refund(keys, "pendingMappings", 1));
      const out = open();
      pool.acquire(s.tenant.key);
      this.pendingTenant.set(out, s.tenant.key);
      return out;
    } catch (e) {
      for (const undo of charged.reverse()) undo();
      throw e;
    }
  }

  setMappingAttribute(
    s: Session,
    dfId: bigint,
    cookie: bigint,
    attribute: Attribute | undefined,
    allowFallback: boolean,
  ): Mapping {
    const df = this.deviceFile(s, dfId);
    const m = df.mapping(cookie);
    if (!attribute) throw invalid("attribute is required: ATTRIBUTE_UC or ATTRIBUTE_WC", "attribute_missing");
    if (m.refs > 1)
      throw precondition(
        `mapping ${cookie} is shared by ${m.refs} CreateMapping references; a cookie's attribute changes for none ` +
          "of them. Release them and create the mapping again with the attribute you want",
        "shared",
      );
    if (m.state !== "pending")
      throw precondition(
        `mapping ${cookie} was already delivered with ${m.effectiveAttribute}; release it and create a new one`,
        "already_delivered",
      );
    const region = m.region;
    this.checkCapability(df, region, attribute, allowFallback);
    const rule = this.mappingRule(s, df, region, attribute, m.prot);
    const attrs = this.attributeMap(df.device.id);
    const range = { offset: m.regionOffset, length: m.length, attribute, prot: m.prot, allowFallback };
    const backing = this.openBacking(s, df, region, range, rule);
    attrs.release(region.index, m.regionOffset, m.length);
    try {
      this.checkPages(attrs, region, m.regionOffset, m.length, backing.effectiveAttribute);
    } catch (e) {
      attrs.acquire(region.index, m.regionOffset, m.length, m.effectiveAttribute);
      backing.release();
      throw e;
    }
    attrs.acquire(region.index, m.regionOffset, m.length, backing.effectiveAttribute);
    m.backing.release();
    m.backing = backing;
    m.requestedAttribute = attribute;
    m.effectiveAttribute = backing.effectiveAttribute;
    m.fallbackReason = backing.fallbackReason;
    m.rule = rule.name;
    this.emit("mapping.update", m);
    return m;
  }

  /**
   * The AttributeMap's check; when it refuses because a revoked mapping whose holder has not
   * unmapped it still holds some of the pages, the refusal says so (reason held_by_revoked). The
   * holds are looked at only then: a grant costs nothing more for them.
   */
  private checkPages(
    attrs: AttributeMap,
    region: RegionInfo,
    offset: bigint,
    length: bigint,
    attribute: Attribute,
  ): void {
    try {
      attrs.check(region.index, region.name, offset, length, attribute);
    } catch (e) {
      const h =
        this.holds.size > 0
          ? this.holds.conflict(attrs.deviceId, region.index, offset, length, attribute, this.opts.pageSize)
          : undefined;
      if (h) throw precondition(heldMessage(h, Date.now()), "held_by_revoked");
      throw e;
    }
  }

  /** A pending mapping is delivered (or gone): it no longer holds a pending slot. */
  private settlePending(s: Session | undefined, m: Mapping): void {
    if (m.state !== "pending") return;
    const tenant = this.pendingTenant.get(m);
    if (tenant !== undefined) this.shares.pendingMappings.release(tenant);
    this.pendingTenant.delete(m);
    if (s) this.quotas.refund(s.quotaKeys, "pendingMappings", 1);
  }

  /** A pending mapping found in the state store after a restart: booked with no check. */
  restorePending(s: Session, m: Mapping): void {
    this.shares.pendingMappings.restore(s.tenant.key);
    this.pendingTenant.set(m, s.tenant.key);
    this.quotas.restore(s.quotaKeys, "pendingMappings", 1);
  }

  private dropMapping(s: Session | undefined, m: Mapping, reason: string): void {
    const df = m.deviceFile;
    if (!df.mappings.has(m.cookie)) return;
    // Revoked from a live holder that has its fd: only asked to unmap, so the pages stay booked.
    const held = s && staysBooked(m.state === "delivered", reason, () => this.alive(s));
    df.removeMapping(m);
    // Older tickets of other references find the mapping gone when redeemed (redeemTicket).
    this.tickets.revoke(m.ticket);
    this.settlePending(s, m);
    m.backing.release();
    if (held) this.hold(s, m, reason);
    else {
      this.attributeMap(df.device.id).release(m.region.index, m.regionOffset, m.length);
      if (s) {
        this.quotas.refund(s.quotaKeys, "mappings", m.refs);
        this.quotas.refund(s.quotaKeys, "bytes", m.length);
      }
    }
    this.emit("mapping.release", m, reason);
  }

  /** The session's process still lives (its pidfd says so). */
  private alive(s: Session): boolean {
    try {
      return pidfdAlive(s.identity.pidfd);
    } catch {
      return false;
    }
  }

  /** m leaves its device file revoked, but its holder may still map it: its booking becomes a hold. */
  private hold(s: Session, m: Mapping, reason: string): void {
    const now = Date.now();
    const enforce = enforcementFor(reason, this.enforcing, this.ruleOf(m.rule));
    const id = s.identity;
    const h: Hold = {
      id: `${m.deviceFile.id}.${m.cookie}.${randomBytes(6).toString("hex")}`,
      pid: id.pid,
      startTime: id.startTime,
      uid: id.uid,
      sessionId: s.id,
      deviceFileId: m.deviceFile.id,
      cookie: m.cookie,
      deviceId: m.deviceFile.device.id,
      regionIndex: m.region.index,
      regionName: m.region.name,
      offset: m.regionOffset,
      length: m.length,
      attribute: m.effectiveAttribute,
      prot: m.prot,
      kind: m.backing.kind,
      refs: m.refs,
      quotaKeys: [...s.quotaKeys],
      rule: m.rule,
      reason,
      since: now,
      enforceAt: enforce ? now + enforce.graceMs : 0,
      enforceBy: enforce?.by ?? "",
      enforced: false,
    };
    this.adoptHold(h, s.identity.pidfd);
    this.holdsMade++;
    this.emit("mapping.hold", h);
  }

  /**
   * Books h (its pages and quota must already be booked: a revoked mapping's are, a restored
   * hold's the caller books) and watches its holder's exit through a dup of `pidfd`.
   */
  adoptHold(h: Hold, pidfd: number): void {
    this.holds.add(h);
    const key = holderKey(h.pid, h.startTime);
    if (this.holders.has(key)) return;
    let watch: Watch | undefined;
    if (this.watchedHolders < MAX_WATCHED_HOLDERS)
      try {
        // watchPidfd keeps a dup of its own: the caller's pidfd (the session's) may close.
        watch = watchPidfd(pidfd, () => this.holderExited(key));
        this.watchedHolders++;
      } catch (e) {
        // No watch (fds exhausted): the sweep checks the process by its start time instead.
        logLimited("hold.watch", `vfio-brokerd: cannot watch holder pid ${h.pid}: ${(e as Error).message}`);
      }
    this.holders.set(key, watch);
  }

  /** A holder process exited: every hold it had ends, its pages and quota are free. */
  private holderExited(key: string): void {
    const [pid, startTime] = [Number(key.slice(0, key.indexOf(":"))), key.slice(key.indexOf(":") + 1)];
    this.batchQuietly(() => {
      for (const h of this.holds.ofHolder(pid, startTime)) this.unhold(h, "exit");
    });
    this.forgetHolder(key);
  }

  private forgetHolder(key: string): void {
    if (!this.holders.has(key)) return;
    const w = this.holders.get(key);
    this.holders.delete(key);
    if (w) {
      w.close();
      this.watchedHolders--;
    }
  }

  /** Ends a hold: its pages and the quota it kept are free. */
  private unhold(h: Hold, how: string): void {
    if (!this.holds.remove(h)) return;
    this.attributeMap(h.deviceId).release(h.regionIndex, h.offset, h.length);
    this.quotas.refund(h.quotaKeys, "mappings", h.refs);
    this.quotas.refund(h.quotaKeys, "bytes", h.length);
    this.emit("mapping.unhold", h, how);
    const key = holderKey(h.pid, h.startTime);
    if (this.holds.ofHolder(h.pid, h.startTime).length === 0) this.forgetHolder(key);
  }

  /** What a revocation of a live mapping would do (admin listings). */
  revocationOf(m: Mapping): RevocationView {
    const s = this.sessions.get(m.deviceFile.sessionId);
    const rule = this.policy.rules.find((r) => r.name === m.rule);
    return liveRevocation(m.state === "delivered", m.backing.kind, s?.identity.pid ?? 0, rule?.revoke);
  }

  /** The rule a mapping was granted under, by name (the old policy's after a reload took it away). */
  private ruleOf(name: string): Rule | undefined {
    return (
      this.policy.rules.find((r) => r.name === name) ??
      this.previousPolicy?.rules.find((r) => r.name === name)
    );
  }

  /**
   * Kills the holders whose enforcement is due (SIGKILL through a pidfd opened for it and checked
   * against the start time: never a process that reused the pid). Their exit then frees the pages.
   */
  private enforceDue(now: number): void {
    const byHolder = new Map<string, Hold[]>();
    for (const h of this.holds.due(now)) {
      const k = holderKey(h.pid, h.startTime);
      byHolder.set(k, [...(byHolder.get(k) ?? []), h]);
    }
    for (const hs of byHolder.values()) {
      for (const h of hs) h.enforced = true;
      const h0 = hs[0]!;
      // A pidfd opened now and checked against the start time is that very process, never one
      // that reused its pid.
      const proc = openIfSameProcess(h0.pid, h0.startTime);
      let result = "gone";
      if ("pidfd" in proc)
        try {
          result = pidfdSendSignal(proc.pidfd, 9) ? "killed" : "gone";
        } catch (e) {
          result = `error:${(e as NodeJS.ErrnoException).code ?? "unknown"}`;
        } finally {
          closeFd(proc.pidfd);
        }
      this.emit("mapping.revoke.enforced", hs, result);
    }
  }

  /** Holders brokerd could not watch: their holds end once /proc says the process is gone. */
  private sweepUnwatched(): void {
    for (const [key, w] of this.holders) {
      if (w) continue;
      const i = key.indexOf(":");
      if (processStartTime(Number(key.slice(0, i))) !== key.slice(i + 1)) this.holderExited(key);
    }
  }

  /** reason: "client", or "undeliverable" (brokerd gives back a grant whose fd it could not send). */
  releaseMapping(s: Session, dfId: bigint, cookie: bigint, reason = "client"): void {
    // A revoked mapping this session still holds: the holder says it has unmapped it.
    if (this.releaseHolds(s, dfId, cookie)) return;
    const df = this.ownDeviceFile(s, dfId);
    const m = df.mapping(cookie);
    if (m.refs > 1) {
      // Another reference still holds the cookie: only this one ends.
      m.refs--;
      this.quotas.refund(s.quotaKeys, "mappings", 1);
      this.emit("mapping.refs", m, "drop");
      return;
    }
    this.dropMapping(s, m, reason);
  }

  private closeDeviceFile(s: Session, df: DeviceFile, reason: string): number {
    if (!s.deviceFiles.has(df.id)) return 0;
    const n = df.mappings.size;
    for (const m of [...df.mappings.values()]) this.dropMapping(s, m, reason);
    s.deviceFiles.delete(df.id);
    this.quotas.refund(s.quotaKeys, "deviceFiles", 1);
    this.emit("devicefile.close", df, reason);
    return n;
  }

  closeDevice(s: Session, dfId: bigint): number {
    const released = this.releaseHolds(s, dfId);
    if (released > 0 && !s.deviceFiles.has(dfId)) return released;
    return this.closeDeviceFile(s, this.ownDeviceFile(s, dfId), "client");
  }

  /** Ends the holds of s in device file dfId (one cookie, or all); how many ended. */
  private releaseHolds(s: Session, dfId: bigint, cookie?: bigint): number {
    const hs = this.holds.size === 0 ? [] : this.holds.ofSession(s.id, dfId, cookie);
    if (hs.length === 0) return 0;
    this.live(s);
    for (const h of hs) this.unhold(h, "release");
    return hs.length;
  }

  readRegion(s: Session, dfId: bigint, offset: bigint, length: number): Buffer {
    const df = this.deviceFile(s, dfId);
    checkAccess(`device file ${dfId}`, 0n, length, BigInt(length), this.opts.maxAccessBytes);
    const r = df.resolve(offset, length);
    this.decide(
      s,
      authorizeAccess(this.policy, s.identity, { device: df.device.id, region: r.region.name, write: false }),
    );
    if (!r.region.readable) throw invalid(`${r.region.name} is not readable`, "access");
    return this.device(df.device.id).backend.read(df.device.id, r.region.index, r.regionOffset, length);
  }

  writeRegion(s: Session, dfId: bigint, offset: bigint, data: Uint8Array): number {
    const df = this.deviceFile(s, dfId);
    checkAccess(`device file ${dfId}`, 0n, data.length, BigInt(data.length), this.opts.maxAccessBytes);
    const r = df.resolve(offset, data.length);
    this.decide(
      s,
      authorizeAccess(this.policy, s.identity, { device: df.device.id, region: r.region.name, write: true }),
    );
    if (!r.region.writable) throw invalid(`${r.region.name} is read-only`, "access");
    if (r.mapping && r.mapping.prot !== "rw")
      throw denied(
        `mapping ${r.mapping.cookie} is read-only (PROT_READ); write through a PROT_READ_WRITE mapping`,
        "prot",
      );
    const dev = this.device(df.device.id);
    if (dev.health !== "healthy")
      throw unavailable(`device ${df.device.id} is ${dev.health}`, `device_${dev.health}`);
    return dev.backend.write(df.device.id, r.region.index, r.regionOffset, data);
  }

  // ---- fd channel ------------------------------------------------------------------------------

  /**
   * Redeems a ticket presented on the fd channel by `peer`. The peer must be the very process the
   * ticket was issued to: same uid and pid, and that session's pidfd still alive (so the pid was
   * not recycled by another process).
   */
  redeemTicket(ticket: string, peer: { uid: number; pid: number }): Delivery {
    const t0 = performance.now();
    const r = this.tickets.redeem(ticket, (h) => {
      const s = this.sessions.get(h.sessionId);
      return !!s && !s.ended && h.uid === peer.uid && h.pid === peer.pid && pidfdAlive(s.identity.pidfd);
    });
    let out: Delivery;
    if (!r.ok) {
      const msg: Record<RedeemFailure, string> = {
        unknown: "no such ticket; use the ticket CreateMapping returned (32 hex digits)",
        expired: `the ticket expired (tickets live ${this.opts.ticketTtlMs} ms); create the mapping again`,
        already_used: "the ticket was already used; each ticket delivers one fd once",
        wrong_peer: `this ticket was issued to another process; present it from the process that called CreateMapping (peer uid ${peer.uid} pid ${peer.pid})`,
        revoked: "the mapping was released or revoked before delivery; create it again",
      };
      out = { ok: false, status: r.why, message: msg[r.why] };
    } else if (r.mapping.deviceFile.mappings.get(r.mapping.cookie) !== r.mapping) {
      // (The cookie may be another mapping's by now: a released one's range is allocated again.)
      out = { ok: false, status: "revoked", message: "the mapping was released or revoked before delivery" };
    } else {
      const m = r.mapping;
      const s = this.sessions.get(m.deviceFile.sessionId);
      let fresh: string | undefined;
      // Another reference's ticket went first and its fd is gone: this one gets a fresh fd.
      if (m.state === "delivered" && s)
        try {
          this.redeliver(s, m);
        } catch (e) {
          fresh = e instanceof BrokerError ? e.message : String(e);
        }
      if (fresh !== undefined)
        out = { ok: false, status: "internal", message: `no fresh fd for cookie ${m.cookie}: ${fresh}` };
      else {
        this.settlePending(s, m);
        m.state = "delivered";
        if (m.ticket === ticket) m.ticket = "";
        out = { ok: true, mapping: m };
      }
    }
    this.emit(
      "fd.delivery",
      out.ok ? "ok" : out.status,
      out.ok ? out.mapping : undefined,
      performance.now() - t0,
      { uid: peer.uid, pid: peer.pid },
    );
    return out;
  }

  /**
   * Hello with a resume token on a fresh connection: gives the connection back the restored
   * session the token names, if the kernel says the caller is that session's very process (same
   * uid, pid and start time). The fresh session ends quietly and its quota slot moves over.
   * Returns undefined when nothing can be resumed (the caller keeps its fresh session).
   */
  resume(fresh: Session, token: string, attach: (s: Session) => void): Session | undefined {
    this.live(fresh);
    if (!/^[0-9a-f]{32}$/.test(token)) return undefined;
    const found = this.sessionsByToken.get(tokenHash(token));
    // This connection resumed that session already: a Hello tried again because its first reply
    // came late (a loaded machine, the client's 2 s timeout) or was lost. It stays resumed.
    if (found && found === fresh && !found.ended && found.resumeToken === token) return found;
    if (!found || found === fresh || !found.detached || found.ended) return undefined;
    const a = found.identity;
    const b = fresh.identity;
    if (a.uid !== b.uid || a.pid !== b.pid || a.startTime === "" || a.startTime !== b.startTime) {
      this.emit(
        "denied",
        fresh,
        "resume_identity",
        `resume token of session ${found.id} from another process`,
      );
      return undefined;
    }
    this.undetach(found);
    found.lastActiveAt = Date.now();
    found.slotHeld = fresh.slotHeld;
    // The slot was taken for the fresh session's tenant; the resumed one keeps the tenant it had
    // (the same uid's, unless /etc/subuid changed in between): the slot moves with it.
    if (fresh.slotHeld && fresh.tenant.key !== found.tenant.key) {
      this.shares.sessions.release(fresh.tenant.key);
      this.shares.sessions.restore(found.tenant.key);
    }
    fresh.slotHeld = false;
    found.clientName = fresh.clientName;
    found.resumeToken = token;
    this.sessionsByPlainToken.set(token, found);
    // The connection moves to the resumed session before the fresh one ends (ending it would
    // otherwise close the connection).
    attach(found);
    this.endSession(fresh, "resumed", `resumed session ${found.id}`);
    this.emit("session.resume", found, fresh);
    return found;
  }

  /**
   * The session a grant or release on the fd channel is made for: the one the resume token names,
   * if the kernel says the connection's peer is its very process (uid, pid, and the session's pidfd
   * still alive, so the pid was not recycled). Throws PERMISSION_DENIED otherwise, and UNAVAILABLE
   * for a session waiting to be resumed (Hello first).
   */
  sessionForFd(token: string, peer: { uid: number; pid: number }): Session {
    const s =
      this.sessionsByPlainToken.get(token) ??
      (/^[0-9a-f]{32}$/.test(token) ? this.sessionsByToken.get(tokenHash(token)) : undefined);
    if (
      !s ||
      s.ended ||
      s.identity.uid !== peer.uid ||
      s.identity.pid !== peer.pid ||
      !pidfdAlive(s.identity.pidfd)
    )
      throw denied(
        `no session of this process (uid ${peer.uid} pid ${peer.pid}) has that token; use the resume_token your Hello returned, from the same process`,
        "fd_session",
      );
    if (s.detached) throw restarting();
    return s;
  }

  /**
   * A fresh backing, and so a fresh fd, for a mapping whose fd already went out: a retried
   * fd-channel grant (brokerd restarted between recording the delivery and sending the fd), or
   * the ticket of another reference on the same cookie. The same process gets an fd for it again.
   */
  redeliver(s: Session, m: Mapping): Mapping {
    const df = m.deviceFile;
    const rule = this.mappingRule(s, df, m.region, m.effectiveAttribute, m.prot);
    const backing = this.openBacking(
      s,
      df,
      m.region,
      {
        offset: m.regionOffset,
        length: m.length,
        attribute: m.effectiveAttribute,
        prot: m.prot,
        allowFallback: false,
      },
      rule,
    );
    m.backing.release();
    m.backing = backing;
    return m;
  }

  /** s has a connection again (resumed), or ended: it no longer waits to be resumed. */
  private undetach(s: Session): void {
    if (!s.detached) return;
    s.detachedSince = 0;
    this.detachedCount--;
  }

  /** A lease opened on s: the events it missed while detached come first. */
  leaseOpened(s: Session): void {
    for (const e of s.missed.splice(0)) s.lease?.send(e);
  }

  private sweep(): void {
    if (this.holds.size > 0) {
      this.enforceDue(Date.now());
      this.sweepUnwatched();
    }
    for (const { id, mapping: m } of this.tickets.sweep()) {
      const s = this.sessions.get(m.deviceFile.sessionId);
      // A mapping whose fd no ticket fetched ends when the last ticket issued for it expires.
      if (m.state === "pending" && m.ticket === id) this.dropMapping(s, m, "ticket-expired");
    }
    const idleMs = this.opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const now = Date.now();
    const graceMs = this.opts.resumeGraceMs ?? DEFAULT_RESUME_GRACE_MS;
    for (const s of [...this.sessions.values()]) {
      if (!s.detached || now - s.detachedSince < graceMs) continue;
      // Not resumed in time. What its process may still have mapped stays booked until it exits
      // (the pidfd watch ends the session then); a session holding nothing ends now.
      if (s.mappingCount === 0)
        this.endSession(s, "resume-timeout", `not resumed within ${graceMs} ms of brokerd's restart`);
    }
    for (const s of [...this.sessions.values()])
      if (!s.lease && !s.detached && now - s.lastActiveAt > idleMs && s.mappingCount === 0)
        this.endSession(
          s,
          "idle",
          `no call for ${idleMs} ms and nothing held; reconnect when you need brokerd`,
        );
  }

  // ---- AdminService ----------------------------------------------------------------------------

  findDeviceFile(id: bigint): { session: Session; df: DeviceFile } {
    for (const s of this.sessions.values()) {
      const df = s.deviceFiles.get(id);
      if (df) return { session: s, df };
    }
    throw notFound(`no device file ${id}; ListDeviceFiles shows the open ones`, "unknown_device_file");
  }

  /** Sends a lease event, or queues it (bounded) while the session waits to be resumed. */
  notify(s: Session, e: LeaseEvent): void {
    if (s.lease) s.lease.send(e);
    else if (s.detached && e.kind !== "keepalive_ack" && s.missed.length < MAX_MISSED_EVENTS)
      s.missed.push(e);
  }

  /** The kernel's view of a live mapping's memory type (real devices), next to what we reported. */
  verifyMappingAttribute(dfId: bigint, cookie: bigint): { mapping: Mapping; check: AttributeCheck } {
    const { df } = this.findDeviceFile(dfId);
    const m = df.mapping(cookie);
    const backend = this.device(df.device.id).backend;
    const check: AttributeCheck = backend.verifyAttribute
      ? backend.verifyAttribute(df.device.id, m.region.index, m.regionOffset, m.length)
      : {
          physStart: 0n,
          length: m.length,
          patTypes: [],
          attributes: [],
          unavailable: `the ${backend.name} backend has no physical memory types to check (its BARs are ordinary memory)`,
        };
    return { mapping: m, check };
  }

  /**
   * Revokes one mapping. Its holder is asked to unmap (lease event); a delivered mapping stays
   * booked until it releases it or exits (RevokeCounts.mappingsHeld). With `enforce`, brokerd kills
   * the holder after enforce.graceMs if it still holds it then. A mapping revoked earlier and still
   * held (no longer in its device file) can be revoked again to enforce it.
   */
  revokeMapping(dfId: bigint, cookie: bigint, reason: string, enforce?: { graceMs: number }): RevokeCounts {
    const held = [...this.holds.all()].filter((h) => h.deviceFileId === dfId && h.cookie === cookie);
    const live = [...this.sessions.values()].find((x) => x.deviceFiles.get(dfId)?.mappings.has(cookie));
    if (!live && held.length > 0) return this.enforceHolds(held, enforce);
    const { session, df } = this.findDeviceFile(dfId);
    const m = df.mapping(cookie);
    const held0 = this.holdsMade;
    this.withEnforcement(enforce, () => this.dropMapping(session, m, "operator"));
    this.notifyRevocation(session, df, cookie, "operator", reason || "revoked by an operator");
    this.emit("revocation", "operator", 1);
    return {
      mappingsRevoked: 1,
      deviceFilesClosed: 0,
      sessionsEnded: 0,
      mappingsHeld: this.holdsMade - held0,
    };
  }

  revokeSession(id: string, reason: string, enforce?: { graceMs: number }): RevokeCounts {
    const s = this.sessions.get(id);
    if (!s) {
      const held = this.holds.ofSessionId(id);
      if (held.length > 0) return this.enforceHolds(held, enforce);
      throw notFound(`no session ${id}; ListSessions shows the live ones`, "unknown_session");
    }
    const counts: RevokeCounts = {
      mappingsRevoked: s.mappingCount,
      deviceFilesClosed: s.deviceFiles.size,
      sessionsEnded: 1,
    };
    const held0 = this.holdsMade;
    this.revokeAllOf(s, "operator", reason || "session revoked by an operator");
    this.withEnforcement(enforce, () =>
      this.endSession(s, "revoked", reason || "session revoked by an operator"),
    );
    this.emit("revocation", "session", counts.mappingsRevoked);
    counts.mappingsHeld = this.holdsMade - held0;
    // What an earlier revocation left held in this session is enforced the same way.
    if (enforce) this.enforceHolds(this.holds.ofSessionId(id), enforce);
    return counts;
  }

  /** Runs fn with the operator's enforcement applying to the holds it makes. */
  private withEnforcement(enforce: { graceMs: number } | undefined, fn: () => void): void {
    this.enforcing = enforce ? { by: "operator", graceMs: enforce.graceMs } : undefined;
    try {
      fn();
    } finally {
      this.enforcing = undefined;
    }
  }

  /** Revoking what is already held: nothing new is taken; with enforce, the holder is killed after the grace. */
  private enforceHolds(held: Hold[], enforce: { graceMs: number } | undefined): RevokeCounts {
    if (enforce) {
      const at = Date.now() + enforce.graceMs;
      for (const h of held)
        if (!h.enforced && (h.enforceAt === 0 || at < h.enforceAt)) {
          h.enforceAt = at;
          h.enforceBy = "operator";
          // Recorded like a new hold: a restart keeps the deadline.
          this.emit("mapping.hold", h);
        }
    }
    return { mappingsRevoked: 0, deviceFilesClosed: 0, sessionsEnded: 0, mappingsHeld: held.length };
  }

  private revokeDevice(
    deviceId: string,
    reason: "device-drain" | "device-gone",
    message: string,
  ): RevokeCounts {
    const held0 = this.holdsMade;
    const counts: RevokeCounts = { mappingsRevoked: 0, deviceFilesClosed: 0, sessionsEnded: 0 };
    for (const s of this.sessions.values()) {
      for (const df of [...s.deviceFiles.values()]) {
        if (df.device.id !== deviceId) continue;
        this.notifyRevocation(s, df, 0n, reason, message);
        counts.mappingsRevoked += this.closeDeviceFile(s, df, reason);
        counts.deviceFilesClosed++;
      }
    }
    this.emit("revocation", reason, counts.mappingsRevoked);
    counts.mappingsHeld = this.holdsMade - held0;
    return counts;
  }

  private setHealth(deviceId: string, health: DeviceHealth): void {
    this.deviceHealth.set(deviceId, health);
    for (const s of this.sessions.values()) this.notify(s, { kind: "device_health", deviceId, health });
    this.emit("device.health", deviceId, health);
  }

  drainDevice(deviceId: string, reason: string): RevokeCounts {
    this.device(deviceId);
    this.setHealth(deviceId, "draining");
    return this.revokeDevice(deviceId, "device-drain", reason || "device drained by an operator");
  }

  undrainDevice(deviceId: string): void {
    this.device(deviceId);
    this.setHealth(deviceId, "healthy");
  }

  private deviceGone(deviceId: string): void {
    this.revokeDevice(deviceId, "device-gone", `device ${deviceId} went away`);
    this.setHealth(deviceId, "gone");
    this.deviceHealth.delete(deviceId);
    // What revoked holders still map stays booked, should the device come back under its id.
    if (this.holds.ofDevice(deviceId).length === 0) this.attributeMaps.delete(deviceId);
  }

  /** Tells the session's lease that a mapping of df (cookie), or all of df (cookie 0), is revoked. */
  private notifyRevocation(
    s: Session,
    df: DeviceFile,
    cookie: bigint,
    reason: string,
    message: string,
  ): void {
    this.notify(s, {
      kind: "revocation",
      deviceFileId: df.id,
      cookie,
      deviceId: df.device.id,
      reason,
      message,
    });
  }

  /** Tells the session's lease that each of its device files is revoked, with reason. */
  private revokeAllOf(s: Session, reason: string, message: string): void {
    for (const df of s.deviceFiles.values()) this.notifyRevocation(s, df, 0n, reason, message);
  }

  /**
   * Shutdown: every leased client hears a "shutdown" revocation of each device file and then
   * LeaseEnded, before its connection closes. Resolves when every lease has flushed that (each
   * wait is bounded by the lease itself, about 1 s).
   */
  async close(keepGrants = false): Promise<void> {
    clearInterval(this.sweepTimer);
    if (keepGrants) {
      // The state store is final (frozen before this): every lease hears "restart" and resumes
      // with the next brokerd; nothing is released.
      this.frozen = true;
      await Promise.all(
        [...this.sessions.values()].map((s) =>
          s.lease
            ? s.lease.end("restart", "brokerd is restarting; your grants are kept: resume with Hello")
            : Promise.resolve(),
        ),
      );
      return;
    }
    const flushed: Promise<void>[] = [];
    const prev = this.onSessionEnded;
    this.onSessionEnded = (s, f) => {
      flushed.push(f);
      prev(s, f);
    };
    for (const s of [...this.sessions.values()]) {
      this.revokeAllOf(s, "shutdown", "brokerd is shutting down");
      this.endSession(s, "shutdown", "brokerd is shutting down");
    }
    await Promise.all(flushed);
  }
}

export { BrokerError, hex };
