// Wires brokerd together: backends, policy, the Broker core, the gRPC servers on the broker and
// admin sockets, the fd channel, metrics and the journal. main.ts adds process concerns
// (signals, sd_notify); tests and tools can start a daemon in-process with startDaemon().
import { readFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { closeFd, PAGE_SIZE } from "@vfio-broker/native";
import {
  AdminService,
  BrokerService,
  Health,
  HealthCheckResponse_ServingStatus,
  serviceDefinition,
} from "@vfio-broker/proto";
import { Broker, type RevokeCounts } from "./broker.js";
import type { Config } from "./config.js";
import type { Backend } from "./devices/backend.js";
import { SimBackend } from "./devices/sim.js";
import { SysfsBackend } from "./devices/sysfs.js";
import { VfioBackend } from "./devices/vfio.js";
import { BrokerError, denied } from "./errors.js";
import { nofileLimit, planFdBudget, REFUSED_LINGER_FDS } from "./fd-budget.js";
import { FdChannel } from "./fdpass/channel.js";
import {
  type InflightExemption,
  inflightExemption,
  inflightWarning,
  parseCapEff,
} from "./fdpass/inflight-exemption.js";
import type { PeerIdentity } from "./identity/peer.js";
import type { Session } from "./identity/session.js";
import { loadTenantMap } from "./identity/tenants-file.js";
import { Journal } from "./journal.js";
import type { RestartSource } from "./metrics/restart.js";
import { openPlaces } from "./places.js";
import { loadPolicyFile, type Policy, PolicyError } from "./policy/index.js";
import { storeFds, takeListenFds } from "./restart/fdstore.js";
import { HandoverError, offerHandover, takeOver } from "./restart/handover.js";
import { adminServiceImpl } from "./rpc/admin-service.js";
import { brokerServiceImpl } from "./rpc/broker-service.js";
import { HealthState } from "./rpc/health-service.js";
import { serveUnix } from "./rpc/server.js";
import { lockRuntimeDir } from "./runtime-lock.js";
import { Ledger } from "./state/ledger.js";
import type { RestoreReport } from "./state/restore.js";
import { currentBootId, StateStore } from "./state/store.js";
import { validateStore } from "./state/validate.js";

/**
 * HTTP/2 limits per connection, so no peer can make brokerd buffer without bound: at most 32
 * calls at once (a stalled peer holds at most 32 small responses), and 4 MiB of session memory.
 */
const GRPC_SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.max_receive_message_length": 64 * 1024,
  "grpc.max_concurrent_streams": 32,
  "grpc-node.max_session_memory": 4,
};
/** The admin socket is for operators: a few connections, outside the clients' budget. */
const MAX_ADMIN_CONNECTIONS = 64;

/**
 * The fd socket's name relative to the broker socket's directory, for Hello's fd_socket_name: a
 * client that mounted the socket directory anywhere finds fd.sock next to broker.sock. "" when the
 * two sockets are in different directories (then only the host path, fd_socket_path, is known).
 */
export function fdSocketName(socket: string, fdSocket: string): string {
  return dirname(resolve(socket)) === dirname(resolve(fdSocket)) ? basename(fdSocket) : "";
}

/** The planned-upgrade socket in the private dir (root only, restart/handover.ts). */
export const HANDOVER_SOCKET = "handover.sock";

/** brokerd's own standing with the kernel's in-flight fd limit (undefined: /proc unreadable). */
function ownInflightExemption(): InflightExemption | undefined {
  try {
    const cap = parseCapEff(readFileSync("/proc/self/status", "utf8"));
    return cap === undefined ? undefined : inflightExemption(cap);
  } catch {
    return undefined;
  }
}

/** Takes name's fd out of the inherited set (undefined: bind afresh). */
function takeInherited(inherited: Map<string, number>, name: string): number | undefined {
  const fd = inherited.get(name);
  inherited.delete(name);
  return fd;
}

export interface Daemon {
  broker: Broker;
  config: Config;
  /** What the start found in the state store and decided (restart metrics, journal). */
  restore: RestoreReport & { run: number; torn: string; discarded: string };
  ledger: Ledger;
  reloadPolicy(): { ok: boolean; errors: string[]; revoked?: RevokeCounts };
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
  /** Extra backends (sysfs, vfio) next to or instead of sim. */
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

export async function startDaemon(config: Config, extras: DaemonExtras = {}): Promise<Daemon> {
  const policy: Policy = loadPolicyFile(config.policy);
  // Every directory brokerd uses, verified (ours, nobody else can write it or its way) and held
  // by fd; sockets and files in them are reached only through those fds. An unsafe one stops here.
  const places = openPlaces(config);
  // Listening sockets that outlive brokerd processes, by name: from the brokerd this one replaces
  // (--take-over; once confirm() resolves it has exited, freeing its lock, store and metrics
  // port) or from systemd's fdstore (LISTEN_FDS). Sockets not inherited are bound fresh.
  const inherited = new Map<string, number>();
  let predecessor = 0;
  if (config.takeOver) {
    const t = await takeOver(
      places.private.at(HANDOVER_SOCKET),
      30_000,
      places.private.show(HANDOVER_SOCKET),
    );
    // The old brokerd is frozen now, its store final: it lets go only if this one can start from
    // that store. If not, it thaws and keeps serving, and both say why.
    try {
      validateStore(config.stateDir, currentBootId(), BigInt(PAGE_SIZE));
    } catch (e) {
      const why = (e as Error).message;
      await t.abandon(`its check of the state store failed: ${why}`);
      throw new HandoverError(
        `not taking over: ${why} The brokerd running (pid ${t.oldPid}) keeps serving.`,
        "EABORTED",
        { cause: e },
      );
    }
    for (const f of t.fds) inherited.set(f.name, f.fd);
    await t.confirm();
    predecessor = t.oldPid;
  } else for (const f of takeListenFds()) inherited.set(f.name, f.fd);
  const inheritedNames = [...inherited.keys()];
  // One brokerd per private dir, decided before any socket is touched.
  const lock = lockRuntimeDir(places.private);
  const budget = planFdBudget(nofileLimit(), {
    sessions: config.maxSessions,
    fdConnections: config.maxFdConnections,
    pendingMappings: config.maxPendingMappings,
  });
  if (budget.warning) console.error(`vfio-brokerd: ${budget.warning}`);
  const inflight = inflightWarning(ownInflightExemption(), process.geteuid?.() ?? 0, nofileLimit());
  if (inflight) console.error(`vfio-brokerd: ${inflight}`);
  // The state store, before any backend: a damaged one stops the start here, with what to do.
  const bootId = currentBootId();
  const opened = StateStore.open(config.stateDir, bootId);
  const store = opened.store;
  const sim = config.sim ? new SimBackend(config.simDevices, join(config.stateDir, "sim")) : undefined;
  const real: Backend[] = [];
  try {
    if (config.sysfs.length > 0) real.push(new SysfsBackend({ devices: config.sysfs }));
    if (config.vfio.length > 0)
      real.push(new VfioBackend({ devices: config.vfio, bind: config.vfioBind, inherited }));
  } catch (e) {
    for (const b of [...real, ...(sim ? [sim] : [])]) b.close();
    store.close();
    throw e;
  }
  const backends: Backend[] = [...(sim ? [sim] : []), ...real, ...(extras.backends ?? [])];

  // Which uids belong to one user (the operator's subordinate uid ranges), for fair shares.
  const readTenants = () => {
    const t = loadTenantMap(config.subuid, config.passwd);
    for (const w of t.warnings) console.error(`vfio-brokerd: tenants: ${w}`);
    return t.map;
  };
  // The ledger is the store's only writer: the core records each change before its reply.
  const ledger = new Ledger(store);
  const broker = new Broker({
    ledger,
    backends,
    policy,
    tenants: readTenants(),
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
  const journal = new Journal(config.journal);
  journal.attach(broker);
  const run = opened.model.run + 1;
  ledger.run(run, bootId);
  const restored = broker.restore(store);
  for (const d of restored.decisions) journal.write("reconcile", { ...d });
  if (opened.torn !== "") journal.write("state.torn", { bytes: opened.torn.length, dir: config.stateDir });
  if (opened.discarded !== "") journal.write("state.discarded", { why: opened.discarded });

  const reloadPolicy = () => {
    // The tenant map too (SIGHUP, AdminService.ReloadPolicy): a broken file costs its ranges only.
    broker.setTenants(readTenants());
    try {
      const revoked = broker.setPolicy(loadPolicyFile(config.policy));
      return { ok: true, errors: [], revoked };
    } catch (e) {
      const errors = e instanceof PolicyError ? e.errors : [(e as Error).message];
      broker.emit("policy.reload", false, errors);
      return { ok: false, errors };
    }
  };

  const health = new HealthState(["vfiobroker.v1.BrokerService", "vfiobroker.v1.AdminService"]);
  let draining = false;

  // Broker socket: anyone may connect; the policy decides what each identity may do.
  const brokerServer = new grpc.Server(GRPC_SERVER_OPTIONS);
  const sessionsByConn = {
    contextOf: (_c: { getPeer(): string }): Session => {
      throw new Error("not ready");
    },
    rebind: (_c: { getPeer(): string }, _s: Session): void => {
      throw new Error("not ready");
    },
  };
  brokerServer.addService(
    serviceDefinition(BrokerService),
    brokerServiceImpl(
      broker,
      {
        sessionOf: (call) => sessionsByConn.contextOf(call),
        rebind: (call, s) => sessionsByConn.rebind(call, s),
      },
      config.leaseKeepaliveMs,
    ),
  );
  brokerServer.addService(serviceDefinition(Health), health.impl());
  const brokerListener = await serveUnix<Session>(
    brokerServer,
    config.socket,
    // Admitted sessions plus refused connections lingering to say why: every fd here is capped.
    {
      mode: 0o666,
      bindPath: places.bindPath(config.socket),
      maxConnections: budget.caps.sessions + REFUSED_LINGER_FDS,
      maxRefused: REFUSED_LINGER_FDS,
      listenFd: takeInherited(inherited, "broker.sock"),
    },
    {
      admit: (id: PeerIdentity) => {
        if (draining) throw new BrokerError("UNAVAILABLE", "brokerd is shutting down", "draining");
        return broker.openSession(id);
      },
      closed: (s) => {
        broker.endSession(s, "disconnect");
        broker.releaseSlot(s);
      },
      refused: (peer, reason) => broker.emit("connection.refused", "broker", peer, reason),
      hopeless: (uid) => broker.sessionsExhausted(uid),
      tenantOf: (uid) => broker.tenantOf(uid).key,
    },
  );
  sessionsByConn.contextOf = brokerListener.contextOf;
  sessionsByConn.rebind = brokerListener.rebind;
  broker.on("session.closed", (s, flushed) => brokerListener.closeAfter(s, flushed));

  // Admin socket: root, or the admin group (file mode, and the peer's identity on every call).
  const adminServer = new grpc.Server(GRPC_SERVER_OPTIONS);
  const admins = {
    contextOf: (_c: { getPeer(): string }): PeerIdentity => {
      throw new Error("not ready");
    },
  };
  adminServer.addService(
    serviceDefinition(AdminService),
    adminServiceImpl(broker, {
      authorize: (call) => void admins.contextOf(call),
      reloadPolicy,
      sim,
      draining: () => draining,
    }),
  );
  adminServer.addService(serviceDefinition(Health), health.impl());
  const adminListener = await serveUnix<PeerIdentity>(
    adminServer,
    config.adminSocket,
    {
      mode: config.adminGid >= 0 ? 0o660 : 0o600,
      bindPath: places.bindPath(config.adminSocket),
      ...(config.adminGid >= 0 ? { gid: config.adminGid } : {}),
      maxConnections: MAX_ADMIN_CONNECTIONS,
      maxRefused: 8,
      listenFd: takeInherited(inherited, "admin.sock"),
    },
    {
      admit: (id) => {
        // brokerd's own uid too: a non-root brokerd (npm start) and its console are one user,
        // who owns the private dir anyway.
        const ok =
          id.uid === 0 ||
          id.uid === process.geteuid?.() ||
          (config.adminGid >= 0 && (id.gid === config.adminGid || id.groups.includes(config.adminGid)));
        if (!ok) throw denied(`uid ${id.uid} is not root or in the admin group`, "not_admin");
        return id;
      },
      closed: (id) => closeFd(id.pidfd),
      refused: (peer, reason) => broker.emit("connection.refused", "admin", peer, reason),
    },
  );
  admins.contextOf = adminListener.contextOf;

  const fdChannel = new FdChannel(broker, {
    path: config.fdSocket,
    bindPath: places.bindPath(config.fdSocket),
    mode: 0o666,
    maxConnections: budget.caps.fdConnections,
    tenantReservePercent: config.tenantReserve,
    listenFd: takeInherited(inherited, "fd.sock"),
  });
  for (const fd of inherited.values()) closeFd(fd); // names this brokerd does not serve
  // What outlives this process: parked in systemd's fdstore (a no-op without NOTIFY_SOCKET) and
  // handed to a successor started with --take-over.
  const parked = [
    { name: "broker.sock", fd: brokerListener.listener.fd },
    { name: "fd.sock", fd: fdChannel.listenFd },
    { name: "admin.sock", fd: adminListener.listener.fd },
    ...real.flatMap((b) => (b instanceof VfioBackend ? b.parkedFds() : [])),
  ];
  storeFds(parked);
  const metrics = extras.metrics
    ? await extras.metrics(broker, config, journal, { restore: { ...restored, run }, ledger })
    : undefined;
  // Offered only now that everything it hands over or closes (metrics included) exists.
  let handedOver = false;
  const handover = offerHandover(
    places.private.at(HANDOVER_SOCKET),
    {
      collect: async () => {
        // From here the state is final: nothing is written, every call and delivery is refused
        // ("restarting"), so the successor restores exactly what clients were told.
        ledger.freeze();
        broker.frozen = true;
        broker.handover.hold();
        fdChannel.pauseAccepting();
        journal.write("handover.start", { pid: process.pid, run });
        return { fds: parked, meta: { pid: process.pid, run } };
      },
      done: async () => {
        handedOver = true;
        draining = true;
        await broker.close(true);
        // Calls held during the hand-over now find brokerd frozen: "restarting", resume there.
        broker.handover.release();
        brokerListener.dropAll();
        adminListener.dropAll();
        await metrics?.close();
        journal.close("handed over to the next brokerd (grants kept)");
        store.close();
        lock.release();
        places.close();
        // Exiting closes everything without unlinking a socket file the successor now serves.
        (extras.onHandedOver ?? (() => process.exit(0)))();
      },
      abort: (e) => {
        ledger.thaw();
        broker.frozen = false;
        broker.handover.release();
        fdChannel.resumeAccepting();
        journal.write("handover.aborted", { reason: e.message });
        console.error(`vfio-brokerd: ${e.message}; serving again`);
        // The successor could not start from the files: rewrite them from what this brokerd holds
        // (its model is every record it wrote), so that the next --take-over or restart can.
        if (/state store/.test(e.message))
          try {
            store.compact();
            journal.write("state.rewritten", { why: "a successor refused the state store" });
            console.error(
              "vfio-brokerd: rewrote the state store from memory (a fresh snapshot); --take-over can be tried again",
            );
          } catch (c) {
            console.error(`vfio-brokerd: rewriting the state store failed: ${(c as Error).message}`);
          }
      },
    },
    { shown: places.private.show(HANDOVER_SOCKET) },
  );
  journal.started(broker, {
    run,
    stateDir: config.stateDir,
    restored: restored.decisions.filter((d) => d.action === "detached").length,
    released: restored.decisions.filter((d) => d.action === "released").length,
    reconcileMs: Math.round(restored.ms * 1000) / 1000,
    ...(predecessor ? { tookOverFrom: predecessor } : {}),
    inheritedSockets: inheritedNames,
  });

  return {
    broker,
    config,
    ledger,
    restore: { ...restored, run, torn: opened.torn, discarded: opened.discarded },
    reloadPolicy,
    reopenJournal: () => journal.reopen(),
    async close(reason = "close", keepGrants = false) {
      if (handedOver) return;
      draining = true;
      await handover.close();
      health.setAll(HealthCheckResponse_ServingStatus.NOT_SERVING);
      if (keepGrants) ledger.freeze();
      // Keeping grants, the socket files stay: under systemd the sockets live on in the fdstore.
      fdChannel.close({ keepPath: keepGrants });
      // Every leased client hears "shutdown" (revocations, then LeaseEnded) before its connection
      // closes; broker.close() waits for that, about 1 s at most. Keeping grants, it hears
      // "restart" instead, and no session ends.
      await broker.close(keepGrants);
      if (keepGrants) brokerListener.dropAll();
      await Promise.all([brokerListener.listener.close(), adminListener.listener.close(), metrics?.close()]);
      brokerServer.forceShutdown();
      adminServer.forceShutdown();
      for (const b of backends) b.close();
      store.close();
      journal.close(keepGrants ? `${reason} (grants kept for the next brokerd)` : reason);
      lock.release();
      places.close();
    },
  };
}
