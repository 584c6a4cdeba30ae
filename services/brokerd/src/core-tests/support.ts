// Test support for the in-process core tests (core-tests/*.test.ts): builds the core as daemon.ts
// does (sim backend, StateStore, Ledger, restore) with no socket and no daemon process, gives
// sessions real kernel identities (a pidfd on a child process the test spawned), and restarts the
// core on its own state store. Test code only: never imported by brokerd. The composition lives
// here alone, so that a change of how the daemon composes the core is one change for every test.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { closeFd, PAGE_SIZE, pidfdOpen } from "@vfio-broker/native";
import { Broker, type BrokerOptions, type Grant } from "../broker.js";
import type { Attribute, Prot } from "../devices/backend.js";
import { SimBackend, type SimDeviceSpec } from "../devices/sim.js";
import { BrokerError } from "../errors.js";
import { type PeerIdentity, processStartTime } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import { type Policy, parsePolicy } from "../policy/index.js";
import { Ledger } from "../state/ledger.js";
import type { RestoreReport } from "../state/restore.js";
import { currentBootId, StateStore } from "../state/store.js";

export const PAGE = BigInt(PAGE_SIZE);

/** Two small devices: every page of them can be looked at after every step. */
export const DEVICES: SimDeviceSpec[] = [
  {
    id: "simA",
    regions: [
      { index: 0, size: 16 << 10 },
      { index: 2, size: 64 << 10, prefetchable: true },
    ],
  },
  { id: "simB", regions: [{ index: 2, size: 32 << 10, prefetchable: true }] },
];

/** A policy from YAML text (the same parser the daemon's policy file goes through). */
export function policy(yaml: string): Policy {
  return parsePolicy(yaml, "core-test-policy.yaml");
}

/** One rule per uid, allowing both devices' BARs UC and WC, with the given limits. */
export function rulesFor(uids: number[], limits = "{}", extra = ""): string {
  const rules = uids.map(
    (u) =>
      `  - name: u${u}\n    match: { uids: [${u}] }\n    devices: ["sim*"]\n    regions: [BAR0, BAR2]\n` +
      `    attributes: [UC, WC]\n    prot: [r, rw]\n    limits: ${limits}\n${extra}`,
  );
  return `version: 1\nrules:\n${rules.join("")}`;
}

/** A process of the test's own making (sleep), standing for a client: its pidfd and exit are real. */
export class Proc {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  constructor() {
    this.child = spawn("sleep", ["3600"], { stdio: "ignore" });
    this.exited = new Promise((r) => this.child.once("exit", () => r()));
  }
  get pid(): number {
    return this.child.pid!;
  }
  /** SIGKILL, resolved once the kernel reports the exit to Node. */
  async kill(): Promise<void> {
    this.child.kill("SIGKILL");
    await this.exited;
  }
}

/** Kills every process, waiting for each exit. */
export async function killAll(procs: Iterable<Proc>): Promise<void> {
  await Promise.all([...procs].map((p) => p.kill()));
}

/** A kernel identity for pid as the broker socket would see it, claiming uid (the pidfd is real). */
export function identityOf(
  pid: number,
  uid: number,
  extra: Partial<Pick<PeerIdentity, "cgroup" | "cgroupTrusted" | "gid">> = {},
): PeerIdentity {
  return {
    uid,
    gid: extra.gid ?? uid,
    pid,
    cgroup: extra.cgroup ?? "",
    cgroupTrusted: extra.cgroupTrusted ?? false,
    groups: [],
    pidfd: pidfdOpen(pid),
    pidfdSource: "pidfd_open",
    startTime: processStartTime(pid),
  };
}

/** Waits (bounded, never asserting a duration) until cond holds, letting the event loop run. */
export async function until(cond: () => boolean, what: string, maxMs = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > maxMs) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A BrokerError's reason, or rethrows anything else (a bug, not a refusal). */
export function refusal(e: unknown): string {
  if (e instanceof BrokerError) return e.reason;
  throw e;
}

/** The reason fn is refused with ("" if it is not refused). */
export function reasonOf(fn: () => unknown): string {
  try {
    fn();
    return "";
  } catch (e) {
    return refusal(e);
  }
}

export interface CoreOptions {
  maxSessions?: number;
  ticketTtlMs?: number;
  tenantReservePercent?: number;
  tenants?: BrokerOptions["tenants"];
}

/** The core of one brokerd run: Broker, its sim backend and its state store, as daemon.ts composes them. */
export interface Core {
  broker: Broker;
  store: StateStore;
  ledger: Ledger;
  backend: SimBackend;
  restored: RestoreReport;
  /** The state directory (StateStore.replay reads it). */
  stateDir: string;
}

/** A temp directory for one test's state; removed by the returned cleanup. */
export function tempDir(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "vfio-core-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Opens a core on the state directory `stateDir` (created if missing) and restores what its store
 * holds, in daemon.ts's order: store, backend, Ledger, Broker, the run record, restore.
 */
export function openCore(stateDir: string, p: Policy, o: CoreOptions = {}): Core {
  const opened = StateStore.open(stateDir, currentBootId());
  const store = opened.store;
  const backend = new SimBackend(DEVICES, join(stateDir, "sim"));
  const ledger = new Ledger(store);
  const broker = new Broker({
    ledger,
    backends: [backend],
    policy: p,
    tenants: o.tenants,
    tenantReservePercent: o.tenantReservePercent,
    pageSize: PAGE,
    ticketTtlMs: o.ticketTtlMs ?? 3_600_000,
    maxSessions: o.maxSessions ?? 256,
    maxPendingMappings: 256,
    // No sweep and no idle end during a test: every change is one the test made.
    idleTimeoutMs: 3_600_000,
    sweepIntervalMs: 3_600_000,
    maxAccessBytes: 1 << 20,
    fdSocketPath: join(stateDir, "fd.sock"),
  });
  // The transport's part: a session the core ended has its connection closed, its slot freed.
  broker.on("session.closed", (s) => broker.releaseSlot(s));
  ledger.run(opened.model.run + 1, currentBootId());
  const restored = broker.restore(store);
  return { broker, store, ledger, backend, restored, stateDir };
}

/**
 * Stops a core as brokerd does when it keeps grants (the store frozen and final, nothing
 * released), then lets go of what the stopped process would have taken with it: its sessions'
 * pidfds and pending backings (ended with a reason that makes no hold; nothing is recorded).
 */
export function stopKeepingGrants(core: Core): void {
  core.ledger.freeze();
  void core.broker.close(true);
  for (const s of [...core.broker.sessions.values()]) core.broker.endSession(s, "process-exit");
  core.store.close();
  core.backend.close();
}

/**
 * Stops a core releasing everything (brokerd's ordinary stop), then closes its store. What stays
 * held (a live holder) ends when the holder exits, with nothing more written: the ledger is
 * frozen first, as the store's fd number may belong to another file by then.
 */
export async function stopCore(core: Core): Promise<void> {
  await core.broker.close(false);
  core.ledger.freeze();
  core.store.close();
  core.backend.close();
}

/** Restart: stop keeping grants, then a new core restored from the same store. */
export function restartCore(core: Core, p: Policy, o: CoreOptions = {}): Core {
  stopKeepingGrants(core);
  return openCore(core.stateDir, p, o);
}

/** Opens a session for identity; on refusal closes the identity's pidfd (as the transport does). */
export function openSession(broker: Broker, id: PeerIdentity): Session {
  try {
    return broker.openSession(id);
  } catch (e) {
    closeFd(id.pidfd);
    throw e;
  }
}

/** The transport's end of a connection: the session ends and its slot is free. */
export function disconnect(broker: Broker, s: Session): void {
  broker.endSession(s, "disconnect");
  broker.releaseSlot(s);
}

export interface MapArgs {
  region?: number;
  offset?: bigint;
  length?: bigint;
  attribute?: Attribute;
  prot?: Prot;
  allowFallback?: boolean;
  /** Create it delivered to the session's own process (the fd channel's fast path). */
  deliver?: boolean;
}

/** CreateMapping with test defaults: region 2, offset 0, one page, WC, rw. */
export function map(broker: Broker, s: Session, dfId: bigint, a: MapArgs = {}): Grant {
  return broker.createMapping(
    s,
    {
      deviceFileId: dfId,
      regionIndex: a.region ?? 2,
      offset: a.offset ?? 0n,
      length: a.length ?? PAGE,
      attribute: a.attribute ?? "WC",
      prot: a.prot ?? "rw",
      allowFallback: a.allowFallback ?? false,
    },
    a.deliver ? { uid: s.identity.uid, pid: s.identity.pid } : undefined,
  );
}

/** Redeems a grant's ticket from the session's own process. */
export function fetchFd(broker: Broker, s: Session, g: Grant): void {
  const d = broker.redeemTicket(g.ticket, { uid: s.identity.uid, pid: s.identity.pid });
  if (!d.ok) throw new Error(`redeem failed: ${d.status}: ${d.message}`);
}

/**
 * What one test file spawns and creates, all taken down after its tests: holder processes
 * (proc()) and state directories (dir()).
 */
export function testScope(after: (fn: () => Promise<void>) => void): { proc: () => Proc; dir: () => string } {
  const procs: Proc[] = [];
  const dirs: (() => void)[] = [];
  after(async () => {
    await killAll(procs);
    for (const d of dirs) d();
  });
  return {
    proc: () => {
      const p = new Proc();
      procs.push(p);
      return p;
    },
    dir: () => {
      const t = tempDir();
      dirs.push(t.remove);
      return t.dir;
    },
  };
}
