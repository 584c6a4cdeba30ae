// The gRPC transport: brokerd accepts each Unix connection itself, reads the peer's identity from
// the kernel (SO_PEERCRED, SO_PEERPIDFD, cgroup) on that socket, opens a Session for it, and only
// then hands the socket to grpc-js (Server.createConnectionInjector). Each socket gets a unique
// remoteAddress, which grpc-js reports as the call's getPeer(): that is how every call is
// attributed to its connection's identity and to nothing the client sends.
import { chmodSync, chownSync, existsSync, unlinkSync } from "node:fs";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { closeFd } from "@vfio-broker/native";
import { BrokerError } from "../errors.js";
import { identityOfSocket, type PeerIdentity } from "../identity/peer.js";

export interface Listener {
  close(): Promise<void>;
}

export interface ConnectionHooks<C> {
  /** Admits a connection (returns its context) or throws to refuse it. */
  admit(identity: PeerIdentity): C;
  /** The connection closed. */
  closed(ctx: C): void;
}

let connCounter = 0;

/** How long a refused connection is kept to answer its calls with the reason. */
const REFUSED_LINGER_MS = 2000;

function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) throw new Error("cannot read the fd of an accepted Unix socket");
  return fd;
}

/**
 * Serves `server`'s services on a Unix socket at path, with per-connection identity.
 * Returns the listener and a lookup from a call to its connection context.
 */
export async function serveUnix<C>(
  server: grpc.Server,
  path: string,
  opts: { mode: number; gid?: number },
  hooks: ConnectionHooks<C>,
): Promise<{
  listener: Listener;
  contextOf: (call: { getPeer(): string }) => C;
  socketOf: (ctx: C) => Socket | undefined;
}> {
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const contexts = new Map<string, C>();
  const refused = new Map<string, BrokerError>();
  const sockets = new Map<C, Socket>();
  const net: NetServer = createServer((socket) => {
    let identity: PeerIdentity;
    try {
      identity = identityOfSocket(socketFd(socket));
    } catch (e) {
      console.error(`brokerd: ${path}: refusing a connection: ${(e as Error).message}`);
      socket.destroy();
      return;
    }
    let ctx: C;
    try {
      ctx = hooks.admit(identity);
    } catch (e) {
      closeFd(identity.pidfd);
      if (!(e instanceof BrokerError)) {
        console.error(`brokerd: ${path}: ${(e as Error).message}`);
        socket.destroy();
        return;
      }
      // A refused connection (limit, draining, not admin) still gets a gRPC answer that says why,
      // on every call, for a short while; then it is closed. It holds no session.
      const key = `vfio-broker-refused-${++connCounter}`;
      Object.defineProperty(socket, "remoteAddress", { value: key, configurable: true });
      refused.set(key, e);
      const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
      socket.on("close", () => {
        clearTimeout(timer);
        refused.delete(key);
      });
      socket.on("error", () => {});
      injector.injectConnection(socket);
      return;
    }
    const key = `vfio-broker-conn-${++connCounter}`;
    Object.defineProperty(socket, "remoteAddress", { value: key, configurable: true });
    contexts.set(key, ctx);
    sockets.set(ctx, socket);
    socket.on("close", () => {
      contexts.delete(key);
      sockets.delete(ctx);
      hooks.closed(ctx);
    });
    socket.on("error", () => {});
    injector.injectConnection(socket);
  });
  if (existsSync(path)) unlinkSync(path);
  await new Promise<void>((resolve, reject) => {
    net.once("error", reject);
    net.listen(path, () => resolve());
  });
  chmodSync(path, opts.mode);
  if (opts.gid !== undefined) chownSync(path, process.getuid?.() ?? 0, opts.gid);
  return {
    listener: {
      close: () =>
        new Promise<void>((resolve) => {
          injector.destroy();
          net.close(() => resolve());
          for (const s of sockets.values()) s.destroy();
        }),
    },
    contextOf: (call) => {
      const why = refused.get(call.getPeer());
      if (why) throw why;
      const ctx = contexts.get(call.getPeer());
      if (ctx === undefined)
        throw new BrokerError("UNAUTHENTICATED", "this call's connection has no verified identity");
      return ctx;
    },
    socketOf: (ctx) => sockets.get(ctx),
  };
}
