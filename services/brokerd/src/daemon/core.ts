// core.ts: builds brokerd's core for one start, in the order each part needs the one before: the
// state store (a damaged one stops the start before any device is touched), the backends, the
// Broker, then what records it (the persister first, then the journal) and the restore of the
// store into it. Every part is registered with the start's unwinding the moment it exists. It
// never serves a socket (daemon/listeners.ts) and never stops a running daemon (daemon/shutdown.ts).
import { basename, dirname, join, resolve } from "node:path";
import { closeFd, PAGE_SIZE } from "@vfio-broker/native";
import { Broker } from "../broker.js";
import type { Config } from "../config.js";
import type { Backend } from "../devices/backend.js";
import { SimBackend } from "../devices/sim.js";
import { SysfsBackend } from "../devices/sysfs.js";
import { VfioBackend } from "../devices/vfio.js";
import { vfioFdName } from "../devices/vfio-open.js";
import type { FdBudget } from "../fd-budget.js";
import type { Session } from "../identity/session.js";
import type { TenantMap } from "../identity/subuid.js";
import { loadTenantMap } from "../identity/tenants-file.js";
import { Journal } from "../journal.js";
import { loadPolicyFile, type Policy, PolicyError } from "../policy/index.js";
import { Ledger } from "../state/ledger.js";
import type { RestoreReport } from "../state/restore.js";
import { currentBootId, type OpenedStore, StateStore } from "../state/store.js";
import type { Inherited } from "./inherit.js";
import type { PolicyReload } from "./parts.js";
import type { Unwind } from "./unwind.js";

/**
 * The fd socket's name relative to the broker socket's directory, for Hello's fd_socket_name: a
 * client that mounted the socket directory anywhere finds fd.sock next to broker.sock. "" when the
 * two sockets are in different directories (then only the host path, fd_socket_path, is known).
 */
export function fdSocketName(socket: string, fdSocket: string): string {
  return dirname(resolve(socket)) === dirname(resolve(fdSocket)) ? basename(fdSocket) : "";
}

/** The state store, opened and replayed; a damaged one throws StateError, saying what to do. */
export function openStore(config: Config, unwind: Unwind): { opened: OpenedStore; bootId: string } {
  const bootId = currentBootId();
  const opened = StateStore.open(config.stateDir, bootId);
  unwind.add("the state store", () => opened.store.close());
  return { opened, bootId };
}

export interface Backends {
  sim: SimBackend | undefined;
  /** The backends of real functions (their fds outlive this process: parked, handed over). */
  real: Backend[];
  /** Every backend the Broker serves: sim, the real ones, the caller's. */
  all: Backend[];
}

/** The device backends, each registered with unwind as it opens. */
export function openBackends(
  config: Config,
  extra: Backend[],
  inherited: Inherited,
  unwind: Unwind,
): Backends {
  for (const b of extra) unwind.add("a backend", () => b.close());
  const sim = config.sim ? new SimBackend(config.simDevices, join(config.stateDir, "sim")) : undefined;
  if (sim) unwind.add("the simulated devices", () => sim.close());
  const real: Backend[] = [];
  if (config.sysfs.length > 0 || config.vfio.length > 0) {
    // Both PCI backends exist when any function is served, so that AdminService.SetDeviceMode can
    // move a function from one mode to the other (devices/modes.ts); an empty one holds no fd.
    dropInheritedVfio(config.sysfs, inherited);
    const sysfs = new SysfsBackend({ devices: config.sysfs, bind: config.vfioBind });
    unwind.add("the sysfs backend", () => sysfs.close());
    real.push(sysfs);
    const vfio = new VfioBackend({ devices: config.vfio, bind: config.vfioBind, inherited: inherited.fds });
    unwind.add("the VFIO backend", () => vfio.close());
    real.push(vfio);
  }
  return { sim, real, all: [...(sim ? [sim] : []), ...real, ...extra] };
}

/**
 * A function served in mode sysfs-wc must have no VFIO device fd open anywhere (on 7.x vfio-pci
 * claims its BARs while one is): a device fd a previous brokerd served it through (its mode was
 * vfio then) is closed here, before the sysfs backend probes it.
 */
function dropInheritedVfio(sysfsMode: string[], inherited: Inherited): void {
  for (const bdf of sysfsMode)
    for (const kind of ["device", "iommufd"] as const) {
      const name = vfioFdName(kind, bdf);
      const fd = inherited.fds.get(name);
      if (fd === undefined) continue;
      inherited.taken(name);
      closeFd(fd);
      console.error(
        `vfio-brokerd: ${bdf}: closed the inherited VFIO ${kind} fd: it is served in mode sysfs-wc now`,
      );
    }
}

/** Which uids belong to one user (the operator's subordinate uid ranges), for fair shares. */
export function readTenants(config: Config): TenantMap {
  const t = loadTenantMap(config.subuid, config.passwd);
  for (const w of t.warnings) console.error(`vfio-brokerd: tenants: ${w}`);
  return t.map;
}

/**
 * The Broker over `backends`. onSessionEnded closes a session's connection (the broker socket's
 * connection table, which exists before the socket is served).
 */
export function buildBroker(
  config: Config,
  policy: Policy,
  backends: Backend[],
  budget: FdBudget,
  onSessionEnded: (s: Session, flushed: Promise<void>) => void,
  store: StateStore,
  unwind: Unwind,
): Broker {
  const broker = new Broker({
    // The store's only writer: the core records each change before it publishes it or replies.
    ledger: new Ledger(store),
    backends,
    policy,
    tenants: readTenants(config),
    tenantReservePercent: config.tenantReserve,
    pageSize: BigInt(PAGE_SIZE),
    ticketTtlMs: config.ticketTtlMs,
    maxSessions: budget.caps.sessions,
    maxPendingMappings: budget.caps.pendingMappings,
    idleTimeoutMs: config.idleTimeoutMs,
    maxAccessBytes: config.maxAccessBytes,
    fdSocketPath: config.fdSocket,
    fdSocketName: fdSocketName(config.socket, config.fdSocket),
    resumeGraceMs: config.resumeGraceMs,
  });
  broker.on("session.closed", onSessionEnded);
  // Keeping every grant: what was restored stays in the store for the next start.
  unwind.add("the broker", () => broker.close(true));
  return broker;
}

export interface Recording {
  ledger: Ledger;
  journal: Journal;
  /** This start's run number. */
  run: number;
  restored: RestoreReport;
}

/**
 * What records the Broker besides its ledger (the journal), this run's record, and the restore of
 * the store's grants into the Broker.
 */
export function record(
  config: Config,
  broker: Broker,
  opened: OpenedStore,
  bootId: string,
  unwind: Unwind,
): Recording {
  const ledger = broker.core.ledger;
  // A failed start writes nothing more: what the store holds is the next start's to restore.
  unwind.add("the state writes", () => ledger.freeze());
  const journal = new Journal(config.journal);
  unwind.add("the journal", (e) => journal.close(`start failed: ${e.message}`));
  journal.attach(broker);
  const run = opened.model.run + 1;
  ledger.run(run, bootId);
  const restored = broker.restore(opened.store);
  for (const d of restored.decisions) journal.write("reconcile", { ...d });
  if (opened.torn !== "") journal.write("state.torn", { bytes: opened.torn.length, dir: config.stateDir });
  if (opened.discarded !== "") journal.write("state.discarded", { why: opened.discarded });
  return { ledger, journal, run, restored };
}

/** Re-reads the policy and the tenant map (SIGHUP, AdminService.ReloadPolicy). */
export function policyReloader(config: Config, broker: Broker): () => PolicyReload {
  return () => {
    // The tenant map too: a broken file costs its ranges only.
    broker.setTenants(readTenants(config));
    try {
      const revoked = broker.setPolicy(loadPolicyFile(config.policy));
      return { ok: true, errors: [], revoked };
    } catch (e) {
      const errors = e instanceof PolicyError ? e.errors : [(e as Error).message];
      broker.emit("policy.reload", false, errors);
      return { ok: false, errors };
    }
  };
}
