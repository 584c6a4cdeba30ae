// Broker: brokerd's core, composed. It builds the core's parts (core/context.ts) and its services
// in dependency order and offers them as one facade to the transports (rpc/, fdpass/), the admin
// service and the daemon, which call it with a Session (a kernel-verified identity) and translate
// BrokerError into their statuses. It holds no rule of its own: each method delegates to the one
// service that owns the concept (sessions/, devices/registry.ts, grants/, state/ledger.ts). Its
// events (core/events.ts) are published after each change is recorded and made.

import { ClaimBindings } from "./claims/bindings.js";
import { type Core, Guard, PolicyInForce, Recorders } from "./core/context.js";
import { CoreEvents } from "./core/events.js";
import {
  type BrokerOptions,
  type CreateMappingArgs,
  DEFAULT_MAX_PENDING_MAPPINGS,
  type Delivery,
  type FdPeer,
  type Grant,
  type Recorder,
  type RevokeCounts,
} from "./core/types.js";
import type {
  AttributeCheck,
  Backend,
  DeviceHealth,
  DeviceInfo,
  DeviceMode,
  RegionInfo,
} from "./devices/backend.js";
import type { ModeChange } from "./devices/modes.js";
import { hex } from "./devices/regions.js";
import { DeviceRegistry, type ServedDevice } from "./devices/registry.js";
import { BrokerError } from "./errors.js";
import { Access } from "./grants/access.js";
import { Charges } from "./grants/charges.js";
import { Deliveries } from "./grants/delivery.js";
import type { DeviceFile, Mapping } from "./grants/device-file.js";
import { DeviceFiles } from "./grants/device-files.js";
import { setDeviceMode } from "./grants/device-mode.js";
import { Ending } from "./grants/ending.js";
import { DEFAULT_RESERVE_PERCENT, type FairShare, tenantShare } from "./grants/fair-share.js";
import { Holders } from "./grants/holders.js";
import { type Hold, HoldBook, liveRevocation, type RevocationView } from "./grants/holds.js";
import type { Layout } from "./grants/layout.js";
import { Mappings } from "./grants/mappings.js";
import { QuotaBook } from "./grants/quota.js";
import { Revocation } from "./grants/revocation.js";
import { TicketBook } from "./grants/tickets.js";
import type { PeerIdentity } from "./identity/peer.js";
import type { LeaseEvent, Session } from "./identity/session.js";
import { type Tenant, TenantMap } from "./identity/subuid.js";
import { authorizeDevice, type Policy } from "./policy/index.js";
import { HandoverGate } from "./restart/gate.js";
import { openSession } from "./sessions/open.js";
import { Resume } from "./sessions/resume.js";
import { SessionSlots } from "./sessions/slots.js";
import { Sweep } from "./sessions/sweep.js";
import { SessionTable } from "./sessions/table.js";
import { Ledger } from "./state/ledger.js";
import { type RestoreReport, restoreState } from "./state/restore.js";
import type { StateStore } from "./state/store.js";

export type { BrokerEvents } from "./core/events.js";
export * from "./core/types.js";

export class Broker extends CoreEvents {
  readonly startedAt = Date.now();
  readonly core: Core;
  /**
   * The global caps, shared fairly among tenants (grants/fair-share.ts): session slots, and
   * mappings created and not yet delivered (each holds a backing fd).
   */
  readonly shares: { sessions: FairShare; pendingMappings: FairShare };
  /**
   * The fd channel's count of fds in replies its peers have not read yet (in flight in the kernel,
   * or held by brokerd while a send would block), and of connections it does not read from until
   * their peers read (sessions/fd-connections.ts keeps both; metrics read them).
   */
  readonly fdReplies = { unreadFds: 0, heldFds: 0, pausedConnections: 0 };
  /** Held shut while a hand-over is in progress: calls wait on it instead of being refused. */
  readonly handover = new HandoverGate();
  /** Kubernetes claims bound by the node agent (AdminService.BindClaim), read by the policy. */
  readonly claims: ClaimBindings;
  private readonly slots: SessionSlots;
  private readonly charges: Charges;
  private readonly holders: Holders;
  private readonly ending: Ending;
  private readonly revocation: Revocation;
  private readonly deviceFiles: DeviceFiles;
  private readonly mappings: Mappings;
  private readonly deliveries: Deliveries;
  private readonly resumer: Resume;
  private readonly access: Access;
  private readonly sweeper: Sweep;

  constructor(readonly opts: BrokerOptions) {
    super();
    const policy = new PolicyInForce(opts.policy);
    const reserve = opts.tenantReservePercent ?? DEFAULT_RESERVE_PERCENT;
    this.shares = {
      sessions: tenantShare(opts.maxSessions, reserve),
      pendingMappings: tenantShare(opts.maxPendingMappings ?? DEFAULT_MAX_PENDING_MAPPINGS, reserve),
    };
    const ledger = opts.ledger ?? Ledger.none();
    const recorders = new Recorders();
    // The ledger holds its records first in a batch: a failure of them is the batch's.
    recorders.add(ledger);
    const core: Core = {
      opts,
      events: this,
      ledger,
      sessions: new SessionTable(),
      devices: new DeviceRegistry(opts.backends, opts.pageSize),
      quotas: new QuotaBook(),
      tickets: new TicketBook<Mapping>(opts.ticketTtlMs),
      holds: new HoldBook(),
      policy,
      guard: new Guard(policy, this),
      recorders,
      tenants: opts.tenants ?? new TenantMap(),
    };
    this.core = core;
    this.slots = new SessionSlots(core.quotas, this.shares.sessions);
    this.charges = new Charges(core.quotas, this.shares.pendingMappings);
    this.holders = new Holders(core, this.charges);
    this.ending = new Ending(core, this.charges, this.holders);
    this.revocation = new Revocation(core, this.ending, this.holders);
    this.claims = new ClaimBindings(core, this.revocation);
    this.deviceFiles = new DeviceFiles(core, this.charges);
    this.mappings = new Mappings(core, this.charges);
    this.deliveries = new Deliveries(core, this.charges, this.mappings);
    this.resumer = new Resume(core, this.slots, (s, r, m) => this.endSession(s, r, m));
    this.access = new Access(core);
    this.sweeper = new Sweep(core, this.ending, this.holders);
    for (const b of opts.backends) b.onDeviceGone((id) => this.revocation.deviceGone(id));
  }

  // ---- what the core holds (admin listings, metrics) -------------------------------------------

  get policy(): Policy {
    return this.core.policy.current;
  }
  get sessions(): Map<string, Session> {
    return this.core.sessions.byId;
  }
  get sessionsByToken(): Map<string, Session> {
    return this.core.sessions.byTokenHash;
  }
  get detachedCount(): number {
    return this.core.sessions.detachedCount;
  }
  get quotas(): QuotaBook {
    return this.core.quotas;
  }
  get holds(): HoldBook {
    return this.core.holds;
  }
  get tickets(): TicketBook<Mapping> {
    return this.core.tickets;
  }
  get deviceHealth(): Map<string, DeviceHealth> {
    return this.core.devices.health;
  }
  get nextDeviceFileId(): bigint {
    return this.deviceFiles.nextId;
  }
  /** Mappings created and not yet delivered, over all sessions (each holds a backing fd). */
  get pendingMappings(): number {
    return this.shares.pendingMappings.total;
  }
  /** Refusing every call (UNAVAILABLE "restarting"): set while brokerd hands over or stops keeping grants. */
  get frozen(): boolean {
    return this.core.guard.frozen;
  }
  set frozen(v: boolean) {
    this.core.guard.frozen = v;
  }

  /** The tenant of uid, as the tenant map says now (a session keeps the one it opened with). */
  tenantOf(uid: number): Tenant {
    return this.core.tenants.tenantOf(uid);
  }

  /** A re-read /etc/subuid: sessions opened from now on are charged to the tenants it names. */
  setTenants(map: TenantMap): void {
    this.core.tenants = map;
  }

  /** Installs a new policy and revokes what it no longer allows (grants/revocation.ts). */
  setPolicy(p: Policy): RevokeCounts {
    this.core.policy.replace(p);
    return this.revocation.policyReloaded(p);
  }

  /** A journal that can hold what it writes until the end of a batch (the ledger is one already). */
  addRecorder(r: Recorder): void {
    this.core.recorders.add(r);
  }

  /** Runs fn with its records and journal lines written at its end (core/context.ts Recorders). */
  batch<T>(fn: () => T): T {
    return this.core.recorders.batch(fn);
  }

  /**
   * Runs fn with its state records written together with those of other connections' calls in
   * this event-loop turn (state/ledger.ts group); settles once they are written.
   */
  group(fn: () => void, ending?: string): Promise<void> {
    return this.core.ledger.group(fn, ending);
  }

  /** Rebuilds sessions, device files, mappings, bookings and holds from the state store's model. */
  restore(store: StateStore, now = Date.now()): RestoreReport {
    return restoreState(
      {
        core: this.core,
        charges: this.charges,
        holders: this.holders,
        deviceFiles: this.deviceFiles,
        revocation: this.revocation,
        endSession: (s, reason) => this.endSession(s, reason),
      },
      store,
      now,
    );
  }

  // ---- devices ---------------------------------------------------------------------------------

  allDevices(): ServedDevice[] {
    return this.core.devices.all();
  }
  device(id: string): ServedDevice {
    return this.core.devices.get(id);
  }
  healthOf(id: string): DeviceHealth {
    return this.core.devices.healthOf(id);
  }
  attributeMap(deviceId: string) {
    return this.core.devices.attributeMap(deviceId);
  }

  // ---- sessions --------------------------------------------------------------------------------

  openSession(identity: PeerIdentity): Session {
    return openSession(this.core, this.slots, identity, this.processExited);
  }

  /** A session's process exited (its exit watch's callback: one for every session). */
  private readonly processExited = (s: Session): void => this.endSession(s, "process-exit");

  /** Ends s and all it holds (grants/ending.ts); its transport closes the connection after. */
  endSession(s: Session, reason: string, message = ""): void {
    void this.ending.endSession(s, reason, message);
  }

  sessionsExhausted(uid: number): boolean {
    return this.slots.exhausted(this.policy, uid, this.tenantOf(uid));
  }

  /** The session's connection closed: its identity and tenant may use the slot again. Idempotent. */
  releaseSlot(s: Session): void {
    this.slots.release(s);
  }

  authorize(s: Session): void {
    this.core.guard.authorize(s);
  }

  resume(fresh: Session, token: string, attach: (s: Session) => void): Session | undefined {
    return this.resumer.resume(fresh, token, attach);
  }

  sessionForFd(token: string, peer: FdPeer): Session {
    return this.resumer.sessionForFd(token, peer);
  }

  leaseOpened(s: Session): void {
    this.resumer.leaseOpened(s);
  }

  notify(s: Session, e: LeaseEvent): void {
    this.revocation.notify(s, e);
  }

  // ---- BrokerService ---------------------------------------------------------------------------

  listDevices(s: Session): { info: DeviceInfo; health: DeviceHealth }[] {
    this.authorize(s);
    return this.allDevices().filter((d) => authorizeDevice(this.policy, s.identity, d.info.id).allow);
  }

  /** The modes of the devices the policy lets s open, sorted (Hello, the workload welcome); never throws. */
  deviceModesFor(s: Session): DeviceMode[] {
    const mine = this.allDevices().filter((d) => authorizeDevice(this.policy, s.identity, d.info.id).allow);
    return [...new Set(mine.map((d) => d.info.mode))].sort();
  }

  getDevice(s: Session, id: string): { info: DeviceInfo; health: DeviceHealth } {
    this.authorize(s);
    const d = this.device(id);
    this.core.guard.decide(s, authorizeDevice(this.policy, s.identity, id));
    return d;
  }

  openDevice(s: Session, deviceId: string, layout: Layout, requestId = ""): DeviceFile {
    return this.deviceFiles.open(s, deviceId, layout, requestId);
  }

  deviceFile(s: Session, id: bigint): DeviceFile {
    return this.core.guard.deviceFile(s, id);
  }

  regionInfo(s: Session, dfId: bigint, index: number): { region: RegionInfo; cookie: bigint } {
    const df = this.deviceFile(s, dfId);
    return { region: df.region(index), cookie: df.regionCookie(index) };
  }

  /**
   * CreateMapping. With `deliverTo` (the fd channel's fast path, whose reply carries the fd) a new
   * mapping is created delivered, with no ticket; a retried or shared one comes back with its
   * ticket (or "" when delivered already) as on the gRPC path.
   */
  createMapping(s: Session, a: CreateMappingArgs, deliverTo?: FdPeer): Grant {
    try {
      return this.mappings.retried(s, a, !!deliverTo) ?? this.mappings.grant(s, a, deliverTo);
    } catch (e) {
      if (e instanceof BrokerError) this.emit("mapping.refused", e.code, e.reason);
      throw e;
    }
  }

  setMappingAttribute(
    s: Session,
    dfId: bigint,
    cookie: bigint,
    attribute: Parameters<Mappings["setAttribute"]>[3],
    allowFallback: boolean,
  ): Mapping {
    return this.mappings.setAttribute(s, dfId, cookie, attribute, allowFallback);
  }

  releaseMapping(s: Session, dfId: bigint, cookie: bigint, reason = "client"): void {
    this.ending.releaseMapping(s, dfId, cookie, reason);
  }

  closeDevice(s: Session, dfId: bigint): number {
    return this.ending.closeDevice(s, dfId);
  }

  readRegion(s: Session, dfId: bigint, offset: bigint, length: number): Buffer {
    return this.access.read(s, dfId, offset, length);
  }

  writeRegion(s: Session, dfId: bigint, offset: bigint, data: Uint8Array): number {
    return this.access.write(s, dfId, offset, data);
  }

  // ---- fd channel ------------------------------------------------------------------------------

  redeemTicket(ticket: string, peer: FdPeer): Delivery {
    return this.deliveries.redeem(ticket, peer);
  }

  redeliver(s: Session, m: Mapping): Mapping {
    return this.mappings.redeliver(s, m);
  }

  // ---- AdminService ----------------------------------------------------------------------------

  findDeviceFile(id: bigint): { session: Session; df: DeviceFile } {
    return this.revocation.findDeviceFile(id);
  }

  /** What a revocation of a live mapping would do (admin listings). */
  revocationOf(m: Mapping): RevocationView {
    const s = this.sessions.get(m.deviceFile.sessionId);
    const rule = this.policy.rules.find((r) => r.name === m.rule);
    return liveRevocation(m.state === "delivered", m.backing.kind, s?.identity.pid ?? 0, rule?.revoke);
  }

  /** The kernel's view of a live mapping's memory type (real devices), next to what we reported. */
  verifyMappingAttribute(dfId: bigint, cookie: bigint): { mapping: Mapping; check: AttributeCheck } {
    const m = this.findDeviceFile(dfId).df.mapping(cookie);
    return { mapping: m, check: this.access.verify(m) };
  }

  revokeMapping(dfId: bigint, cookie: bigint, reason: string, enforce?: { graceMs: number }): RevokeCounts {
    return this.revocation.revokeMapping(dfId, cookie, reason, enforce);
  }

  revokeSession(id: string, reason: string, enforce?: { graceMs: number }): RevokeCounts {
    return this.revocation.revokeSession(id, reason, enforce);
  }

  drainDevice(deviceId: string, reason: string): RevokeCounts {
    this.device(deviceId);
    this.revocation.setHealth(deviceId, "draining");
    return this.revocation.revokeDevice(deviceId, "device-drain", reason || "device drained by an operator");
  }

  /** AdminService.SetDeviceMode (grants/device-mode.ts): refused while anything holds the device. */
  setDeviceMode(deviceId: string, mode: DeviceMode, reason: string): ModeChange {
    return setDeviceMode(this.core, deviceId, mode, reason);
  }

  undrainDevice(deviceId: string): void {
    this.device(deviceId);
    this.revocation.setHealth(deviceId, "healthy");
  }

  /** A restored hold (state/restore.ts books its pages first). */
  adoptHold(h: Hold, pidfd: number): void {
    this.holders.adopt(h, pidfd);
  }

  /**
   * Shutdown: every leased client hears a "shutdown" revocation of each device file and then
   * LeaseEnded, before its connection closes. Resolves when every lease has flushed that (each
   * wait is bounded by the lease itself, about 1 s). Keeping grants (a restart), nothing is
   * released: every lease hears "restart" and resumes with the next brokerd.
   */
  async close(keepGrants = false): Promise<void> {
    this.sweeper.stop();
    const sessions = [...this.sessions.values()];
    if (keepGrants) {
      this.frozen = true;
      const msg = "brokerd is restarting; your grants are kept: resume with Hello";
      await Promise.all(sessions.map((s) => (s.lease ? s.lease.end("restart", msg) : Promise.resolve())));
      return;
    }
    const flushed: Promise<void>[] = [];
    for (const s of sessions) {
      this.revocation.revokeAllOf(s, "shutdown", "brokerd is shutting down");
      flushed.push(this.ending.endSession(s, "shutdown", "brokerd is shutting down"));
    }
    await Promise.all(flushed);
  }
}

export type { Backend };
export { BrokerError, hex };
