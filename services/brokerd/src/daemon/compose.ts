// compose.ts: composes brokerd for one start, in dependency order: each part is built when what it
// needs exists, and is registered with the start's unwinding (daemon/unwind.ts) the moment it is
// open. The policy and the places first (an unsafe directory stops the start), the inherited fds,
// the runtime lock, the state store, the backends, the Broker and what records it, the three
// sockets, metrics, the hand-over offer; the fds that outlive the process are parked last. It
// opens nothing itself (daemon/core.ts, daemon/listeners.ts do) and never stops a running daemon.
import { readFileSync } from "node:fs";
import type { Config } from "../config.js";
import { VfioBackend } from "../devices/vfio.js";
import { type FdBudget, nofileLimit, planFdBudget } from "../fd-budget.js";
import {
  type InflightExemption,
  inflightExemption,
  inflightWarning,
  parseCapEff,
} from "../fdpass/inflight-exemption.js";
import type { PeerIdentity } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import { openPlaces } from "../places.js";
import { loadPolicyFile } from "../policy/index.js";
import { restoreChangedFds, storeFds } from "../restart/fdstore.js";
import { Connections } from "../rpc/connections.js";
import { HealthState } from "../rpc/health-service.js";
import { lockRuntimeDir } from "../runtime-lock.js";
import { buildBroker, openBackends, openStore, policyReloader, record } from "./core.js";
import { inheritFds } from "./inherit.js";
import { openFdChannel, serveAdminSocket, serveBrokerSocket } from "./listeners.js";
import type { Daemon, DaemonExtras, Lifecycle, Parts } from "./parts.js";
import { shutdown } from "./shutdown.js";
import type { Unwind } from "./unwind.js";
import { offerUpgrade } from "./upgrade.js";

/** brokerd's own standing with the kernel's in-flight fd limit (undefined: /proc unreadable). */
function ownInflightExemption(): InflightExemption | undefined {
  try {
    const cap = parseCapEff(readFileSync("/proc/self/status", "utf8"));
    return cap === undefined ? undefined : inflightExemption(cap);
  } catch {
    return undefined;
  }
}

/** The caps RLIMIT_NOFILE allows (fd-budget.ts); what does not fit is said on stderr. */
function planBudget(config: Config): FdBudget {
  const budget = planFdBudget(nofileLimit(), {
    sessions: config.maxSessions,
    fdConnections: config.maxFdConnections,
    pendingMappings: config.maxPendingMappings,
  });
  if (budget.warning) console.error(`vfio-brokerd: ${budget.warning}`);
  const inflight = inflightWarning(ownInflightExemption(), process.geteuid?.() ?? 0, nofileLimit());
  if (inflight) console.error(`vfio-brokerd: ${inflight}`);
  return budget;
}

/** Builds and starts every part; on a throw, `unwind` holds everything opened so far. */
export async function compose(config: Config, extras: DaemonExtras, unwind: Unwind): Promise<Daemon> {
  const policy = loadPolicyFile(config.policy);
  // Every directory brokerd uses, verified (ours, nobody else can write it or its way) and held
  // by fd; sockets and files in them are reached only through those fds. An unsafe one stops here.
  const places = openPlaces(config);
  unwind.add("the runtime directories", () => places.close());
  const inherited = await inheritFds(config, places, unwind);
  // One brokerd per private dir, decided before any socket is touched.
  const lock = lockRuntimeDir(places.private);
  unwind.add("the runtime lock", () => lock.release());
  const budget = planBudget(config);
  // The state store, before any backend: a damaged one stops the start here, with what to do.
  const { opened, bootId } = openStore(config, unwind);
  const backends = openBackends(config, extras.backends ?? [], inherited, unwind);
  // Each socket's table of connections exists before the parts that look calls up in it: the
  // Broker closes an ended session's connection through it, the services find a call's session.
  const sessions = new Connections<Session>();
  const admins = new Connections<PeerIdentity>();
  const broker = buildBroker(
    config,
    policy,
    backends.all,
    budget,
    (s, f) => sessions.closeAfter(s, f),
    opened.store,
    unwind,
  );
  const { ledger, journal, run, restored } = record(config, broker, opened, bootId, unwind);
  const reloadPolicy = policyReloader(config, broker);

  const life: Lifecycle = { draining: false, handedOver: false };
  const health = new HealthState(["vfiobroker.v1.BrokerService", "vfiobroker.v1.AdminService"]);
  const ctx = { config, places, inherited, broker, health, life, unwind };
  const brokerSocket = await serveBrokerSocket(ctx, budget, sessions);
  const adminSocket = await serveAdminSocket(ctx, admins, reloadPolicy, backends.sim);
  const fdChannel = openFdChannel(ctx, budget);
  inherited.closeRest(); // names this brokerd does not serve
  const metrics = extras.metrics
    ? await extras.metrics(broker, config, journal, { restore: { ...restored, run }, ledger })
    : undefined;
  if (metrics) unwind.add("metrics", () => metrics.close());
  const parts: Parts = {
    config,
    life,
    places,
    lock,
    store: opened.store,
    backends: backends.all,
    broker,
    ledger,
    journal,
    run,
    health,
    brokerSocket,
    adminSocket,
    fdChannel,
    // What outlives this process: handed to a successor started with --take-over, and parked in
    // systemd's fdstore below. Read when used: a mode switch opens or closes device fds.
    get parked() {
      return [
        { name: "broker.sock", fd: brokerSocket.listening.listener.fd },
        { name: "fd.sock", fd: fdChannel.listenFd },
        { name: "admin.sock", fd: adminSocket.listening.listener.fd },
        ...backends.real.flatMap((b) => (b instanceof VfioBackend ? b.parkedFds() : [])),
      ];
    },
    ...(metrics ? { metrics } : {}),
  };
  const handover = offerUpgrade(parts, extras.onHandedOver ?? (() => process.exit(0)));
  unwind.add("the hand-over offer", () => handover.close());
  // Parked once nothing can fail any more: a failed start leaves no socket in the fdstore whose
  // file it removed (a no-op without NOTIFY_SOCKET).
  let stored = parts.parked;
  storeFds(stored);
  // A mode switch closed or opened VFIO fds: the fdstore follows (a stored copy of a closed device
  // fd would keep the device open in systemd, and on 7.x its BARs claimed).
  broker.on("device.mode", () => {
    stored = restoreChangedFds(stored, parts.parked);
  });
  journal.started(broker, {
    run,
    stateDir: config.stateDir,
    restored: restored.decisions.filter((d) => d.action === "detached").length,
    released: restored.decisions.filter((d) => d.action === "released").length,
    reconcileMs: Math.round(restored.ms * 1000) / 1000,
    ...(inherited.predecessor ? { tookOverFrom: inherited.predecessor } : {}),
    inheritedSockets: inherited.names,
  });
  return {
    broker,
    config,
    ledger,
    budget,
    restore: { ...restored, run, torn: opened.torn, discarded: opened.discarded },
    reloadPolicy,
    reopenJournal: () => journal.reopen(),
    close: (reason = "close", keepGrants = false) => shutdown(parts, handover, reason, keepGrants),
  };
}
