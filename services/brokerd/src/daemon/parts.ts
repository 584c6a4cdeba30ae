// parts.ts: the names of what a running brokerd is made of, for the files that compose it
// (daemon/compose.ts), hand it over (daemon/upgrade.ts) and stop it (daemon/shutdown.ts), and the
// public shape of a started daemon (Daemon, DaemonExtras, re-exported by daemon.ts). Types only:
// it builds, opens and closes nothing.
import type * as grpc from "@grpc/grpc-js";
import type { Broker, RevokeCounts } from "../broker.js";
import type { Config } from "../config.js";
import type { Backend } from "../devices/backend.js";
import type { FdBudget } from "../fd-budget.js";
import type { FdChannel } from "../fdpass/channel.js";
import type { PeerIdentity } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import type { Journal } from "../journal.js";
import type { RestartSource } from "../metrics/restart.js";
import type { Places } from "../places.js";
import type { NamedFd } from "../restart/fdstore.js";
import type { HealthState } from "../rpc/health-service.js";
import type { serveUnix } from "../rpc/server.js";
import type { RuntimeLock } from "../runtime-lock.js";
import type { Ledger } from "../state/ledger.js";
import type { RestoreReport } from "../state/restore.js";
import type { StateStore } from "../state/store.js";

export interface Daemon {
  broker: Broker;
  config: Config;
  /** What the start found in the state store and decided (restart metrics, journal). */
  restore: RestoreReport & { run: number; torn: string; discarded: string };
  ledger: Ledger;
  /** The client caps RLIMIT_NOFILE allowed (fd-budget.ts), as the ready line says them. */
  budget: FdBudget;
  reloadPolicy(): PolicyReload;
  /** Reopens the audit journal file (log rotation). */
  reopenJournal(): void;
  /**
   * Stops accepting and closes every socket and fd; the journal records `reason`. keepGrants:
   * the state store is frozen first, every lease hears "restart", and the next brokerd restores
   * and resumes every session; else every session ends and its grants are released.
   */
  close(reason?: string, keepGrants?: boolean): Promise<void>;
}

export interface DaemonExtras {
  /** Extra backends (sysfs, vfio) next to or instead of sim; the daemon closes them with its own. */
  backends?: Backend[];
  /** After a hand-over to a successor (default: exit the process, which must not linger). */
  onHandedOver?: () => void;
  /** Attaches metrics (the journal's own series included); returns a closer. */
  metrics?: (
    broker: Broker,
    config: Config,
    journal: Journal,
    restart: RestartSource,
  ) => Promise<{ close(): Promise<void> }>;
}

export interface PolicyReload {
  ok: boolean;
  errors: string[];
  revoked?: RevokeCounts;
}

/** Where a running brokerd stands: accepting, draining (stopping or handed over), or handed over. */
export interface Lifecycle {
  draining: boolean;
  handedOver: boolean;
}

/** A gRPC server and the Unix socket it is served on (rpc/server.ts). */
export interface Served<C> {
  server: grpc.Server;
  listening: Awaited<ReturnType<typeof serveUnix<C>>>;
}

/** Everything a started brokerd holds, each part opened once by daemon/compose.ts. */
export interface Parts {
  config: Config;
  life: Lifecycle;
  places: Places;
  lock: RuntimeLock;
  store: StateStore;
  backends: Backend[];
  broker: Broker;
  ledger: Ledger;
  journal: Journal;
  /** This start's run number in the state store. */
  run: number;
  health: HealthState;
  brokerSocket: Served<Session>;
  adminSocket: Served<PeerIdentity>;
  fdChannel: FdChannel;
  /**
   * The fds that outlive this process: parked in systemd's fdstore, handed to a successor. Read
   * each time it is needed (a mode switch changes the device fds).
   */
  readonly parked: NamedFd[];
  metrics?: { close(): Promise<void> };
}
