// listeners.ts: serves brokerd's three sockets over a built core: the broker socket (gRPC, anyone
// may connect, the policy decides), the admin socket (gRPC, root or the admin group) and the fd
// socket (fd channel). Each is bound afresh or adopted from an inherited fd, and registered with
// the start's unwinding at once: on a failed start its listener closes and a socket file bound by
// this start is removed (an inherited one is left to whoever still serves it). It never builds the
// core (daemon/core.ts) and never stops a running daemon (daemon/shutdown.ts).
import { lstatSync, unlinkSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { closeFd } from "@vfio-broker/native";
import { AdminService, BrokerService, Health, serviceDefinition } from "@vfio-broker/proto";
import type { Broker } from "../broker.js";
import type { Config } from "../config.js";
import type { SimBackend } from "../devices/sim.js";
import { BrokerError, denied } from "../errors.js";
import { type FdBudget, REFUSED_LINGER_FDS } from "../fd-budget.js";
import { FdChannel } from "../fdpass/channel.js";
import type { PeerIdentity } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import type { Places } from "../places.js";
import { adminServiceImpl } from "../rpc/admin-service.js";
import { brokerServiceImpl } from "../rpc/broker-service.js";
import type { Connections } from "../rpc/connections.js";
import type { HealthState } from "../rpc/health-service.js";
import { type ServeOptions, serveUnix } from "../rpc/server.js";
import type { Inherited } from "./inherit.js";
import type { Lifecycle, PolicyReload, Served } from "./parts.js";
import type { Unwind } from "./unwind.js";

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

/** What every listener needs from the start. */
export interface ListenerContext {
  config: Config;
  places: Places;
  inherited: Inherited;
  broker: Broker;
  health: HealthState;
  life: Lifecycle;
  unwind: Unwind;
}

/**
 * Removes the socket file at bindPath on a failed start if this start bound it (listenFd
 * undefined) and it is still that socket; an inherited one stays.
 */
function unbind(bindPath: string, listenFd: number | undefined): () => void {
  if (listenFd !== undefined) return () => {};
  const ino = lstatSync(bindPath).ino;
  return () => {
    try {
      if (lstatSync(bindPath).ino === ino) unlinkSync(bindPath);
    } catch {
      // gone already
    }
  };
}

/** Serves `server` on a Unix socket named `name` (broker.sock, admin.sock), unwound on failure. */
async function serve<C>(
  ctx: ListenerContext,
  what: string,
  server: grpc.Server,
  name: string,
  path: string,
  opts: Omit<ServeOptions, "bindPath" | "listenFd">,
  hooks: Parameters<typeof serveUnix<C>>[3],
  connections: Connections<C>,
): Promise<Served<C>> {
  ctx.unwind.add(`the gRPC server of ${what}`, () => server.forceShutdown());
  const bindPath = ctx.places.bindPath(path);
  // An inherited socket stays the inherited set's (closed by its unwinding) until it is served.
  const listenFd = ctx.inherited.fds.get(name);
  const listening = await serveUnix<C>(server, path, { ...opts, bindPath, listenFd }, hooks, connections);
  ctx.inherited.taken(name);
  const removeFile = unbind(bindPath, listenFd);
  ctx.unwind.add(what, async () => {
    // listener.close() closes the listening fd, the inherited one included.
    await listening.listener.close();
    removeFile();
  });
  return { server, listening };
}

/** The broker socket: anyone may connect; the policy decides what each identity may do. */
export function serveBrokerSocket(
  ctx: ListenerContext,
  budget: FdBudget,
  sessions: Connections<Session>,
): Promise<Served<Session>> {
  const { config, broker, life } = ctx;
  const server = new grpc.Server(GRPC_SERVER_OPTIONS);
  server.addService(
    serviceDefinition(BrokerService),
    brokerServiceImpl(
      broker,
      { sessionOf: (call) => sessions.contextOf(call), rebind: (call, s) => sessions.rebind(call, s) },
      config.leaseKeepaliveMs,
    ),
  );
  server.addService(serviceDefinition(Health), ctx.health.impl());
  return serve<Session>(
    ctx,
    "the broker socket",
    server,
    "broker.sock",
    config.socket,
    // Admitted sessions plus refused connections lingering to say why: every fd here is capped.
    {
      mode: 0o666,
      maxConnections: budget.caps.sessions + REFUSED_LINGER_FDS,
      maxRefused: REFUSED_LINGER_FDS,
    },
    {
      admit: (id: PeerIdentity) => {
        if (life.draining) throw new BrokerError("UNAVAILABLE", "brokerd is shutting down", "draining");
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
    sessions,
  );
}

/** The admin socket: root, or the admin group (file mode, and the peer's identity on every call). */
export function serveAdminSocket(
  ctx: ListenerContext,
  admins: Connections<PeerIdentity>,
  reloadPolicy: () => PolicyReload,
  sim: SimBackend | undefined,
): Promise<Served<PeerIdentity>> {
  const { config, broker, life } = ctx;
  const server = new grpc.Server(GRPC_SERVER_OPTIONS);
  server.addService(
    serviceDefinition(AdminService),
    adminServiceImpl(broker, {
      authorize: (call) => void admins.contextOf(call),
      reloadPolicy,
      sim,
      draining: () => life.draining,
    }),
  );
  server.addService(serviceDefinition(Health), ctx.health.impl());
  const adminGid = config.adminGid;
  return serve<PeerIdentity>(
    ctx,
    "the admin socket",
    server,
    "admin.sock",
    config.adminSocket,
    {
      mode: adminGid >= 0 ? 0o660 : 0o600,
      ...(adminGid >= 0 ? { gid: adminGid } : {}),
      maxConnections: MAX_ADMIN_CONNECTIONS,
      maxRefused: 8,
    },
    {
      admit: (id) => {
        // brokerd's own uid too: a non-root brokerd (npm start) and its console are one user,
        // who owns the private dir anyway.
        const ok =
          id.uid === 0 ||
          id.uid === process.geteuid?.() ||
          (adminGid >= 0 && (id.gid === adminGid || id.groups.includes(adminGid)));
        if (!ok) throw denied(`uid ${id.uid} is not root or in the admin group`, "not_admin");
        return id;
      },
      closed: (id) => closeFd(id.pidfd),
      refused: (peer, reason) => broker.emit("connection.refused", "admin", peer, reason),
    },
    admins,
  );
}

/** The fd socket (fd channel): bound afresh or adopted, unwound like the others. */
export function openFdChannel(ctx: ListenerContext, budget: FdBudget): FdChannel {
  const { config } = ctx;
  const listenFd = ctx.inherited.fds.get("fd.sock");
  const channel = new FdChannel(ctx.broker, {
    path: config.fdSocket,
    bindPath: ctx.places.bindPath(config.fdSocket),
    mode: 0o666,
    maxConnections: budget.caps.fdConnections,
    tenantReservePercent: config.tenantReserve,
    listenFd,
  });
  ctx.inherited.taken("fd.sock");
  // Closing removes the socket file only if this start bound it.
  ctx.unwind.add("the fd socket", () => channel.close({ keepPath: listenFd !== undefined }));
  return channel;
}
