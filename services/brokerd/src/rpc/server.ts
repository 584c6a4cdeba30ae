// The gRPC transport: brokerd accepts each Unix connection itself, reads the peer's identity from
// the kernel (SO_PEERCRED, SO_PEERPIDFD, cgroup) on that socket, opens a Session for it, and only
// then hands the socket to grpc-js (Server.createConnectionInjector). Each socket gets a unique
// remoteAddress, which grpc-js reports as the call's getPeer(): that is how every call is
// attributed to its connection's identity and to nothing the client sends.
import { existsSync, lchownSync } from "node:fs";
import { connect, createServer, type Server as NetServer, type Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { closeFd, dupFd, listenUnix, peerCred } from "@vfio-broker/native";
import { BrokerError } from "../errors.js";
import { identityOfSocket, type PeerIdentity } from "../identity/peer.js";
import { logLimited } from "../log.js";

export interface Listener {
  close(): Promise<void>;
  /**
   * The listening socket's own fd (bound natively, so closing the server never removes the socket
   * file): what is parked in systemd's fdstore or handed over to the next brokerd.
   */
  readonly fd: number;
}

export interface ConnectionHooks<C> {
  /** Admits a connection (returns its context) or throws to refuse it. */
  admit(identity: PeerIdentity): C;
  /** The connection closed. */
  closed(ctx: C): void;
  /** A connection was refused (for the journal and metrics): the peer and the error's reason. */
  refused?(peer: { uid: number; pid: number }, reason: string): void;
  /**
   * Cheap early check from SO_PEERCRED alone: the uid cannot be admitted whatever else is true of
   * it (e.g. it already holds the most sessions any rule could give it). Lets a uid that
   * reconnects in a tight loop be turned away before the /proc reads of a full identity.
   */
  hopeless?(uid: number): boolean;
}

export interface ServeOptions {
  mode: number;
  gid?: number;
  /**
   * Connections served at once, admitted or lingering refused (net.Server.maxConnections: more
   * are closed at accept). It bounds brokerd's fds for this socket whatever clients do.
   */
  maxConnections: number;
  /** Refused connections kept to answer with the reason, per uid and in all (more are just closed). */
  maxRefusedPerUid?: number;
  maxRefused?: number;
  /** An already listening socket at path (hand-over, fdstore) instead of binding one. */
  listenFd?: number;
  /**
   * Where to bind `path`: the same name reached through its verified directory's fd
   * (/proc/self/fd/N/NAME, places.ts), so the bind cannot be redirected. Default: path.
   */
  bindPath?: string;
}

let connCounter = 0;

/** How long a refused connection is kept to answer its calls with the reason. */
const REFUSED_LINGER_MS = 2000;
/** After a session's last lease event is flushed, how long before its socket is closed. */
const CLOSE_AFTER_FLUSH_MS = 20;

/** Whether something accepts connections on the Unix socket at path. */
function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(path);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

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
  opts: ServeOptions,
  hooks: ConnectionHooks<C>,
): Promise<{
  listener: Listener;
  contextOf: (call: { getPeer(): string }) => C;
  /** Closes ctx's connection once `flushed` settles (its last lease event is out), bounded. */
  closeAfter: (ctx: C, flushed: Promise<void>) => void;
  /** The call's connection has another context from now on (a resumed session). */
  rebind: (call: { getPeer(): string }, ctx: C) => void;
  /** Closes every connection now, without the hooks' `closed` (brokerd hands its state on). */
  dropAll: () => void;
}> {
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const contexts = new Map<string, C>();
  const refused = new Map<string, BrokerError>();
  const refusedByUid = new Map<number, number>();
  const sockets = new Map<C, Socket>();
  const maxRefusedPerUid = opts.maxRefusedPerUid ?? 8;
  const maxRefused = opts.maxRefused ?? 64;
  let dropping = false;
  const net: NetServer = createServer((socket) => {
    // Any failure here is this connection's alone: it is closed, brokerd goes on.
    socket.on("error", () => {});
    let identity: PeerIdentity;
    try {
      const fd = socketFd(socket);
      // Only a uid already lingering at its refusal cap can be hopeless: for everyone else this
      // costs no extra syscall (identityOfSocket reads SO_PEERCRED itself).
      if (hooks.hopeless && refusedByUid.size > 0) {
        const cred = peerCred(fd);
        if ((refusedByUid.get(cred.uid) ?? 0) >= maxRefusedPerUid && hooks.hopeless(cred.uid)) {
          hooks.refused?.({ uid: cred.uid, pid: cred.pid }, "limit:sessions");
          socket.destroy();
          return;
        }
      }
      identity = identityOfSocket(fd);
    } catch (e) {
      logLimited(`refuse:${path}`, `brokerd: ${path}: refusing a connection: ${(e as Error).message}`);
      socket.destroy();
      return;
    }
    let ctx: C;
    try {
      ctx = hooks.admit(identity);
    } catch (e) {
      closeFd(identity.pidfd);
      const peer = { uid: identity.uid, pid: identity.pid };
      if (!(e instanceof BrokerError)) {
        logLimited(`refuse:${path}`, `brokerd: ${path}: ${(e as Error).message}`);
        hooks.refused?.(peer, "internal");
        socket.destroy();
        return;
      }
      hooks.refused?.(peer, e.reason);
      // A refused connection (limit, draining, not admin) still gets a gRPC answer that says why,
      // on every call, for a short while; then it is closed. It holds no session. Only a few per
      // uid linger: an identity hammering the socket gets its extra connections just closed.
      const lingering = refusedByUid.get(identity.uid) ?? 0;
      if (lingering >= maxRefusedPerUid || refused.size >= maxRefused) {
        socket.destroy();
        return;
      }
      refusedByUid.set(identity.uid, lingering + 1);
      const key = `vfio-broker-refused-${++connCounter}`;
      Object.defineProperty(socket, "remoteAddress", { value: key, configurable: true });
      refused.set(key, e);
      const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
      const uid = identity.uid;
      socket.on("close", () => {
        clearTimeout(timer);
        refused.delete(key);
        const n = (refusedByUid.get(uid) ?? 1) - 1;
        if (n <= 0) refusedByUid.delete(uid);
        else refusedByUid.set(uid, n);
      });
      injector.injectConnection(socket);
      return;
    }
    const key = `vfio-broker-conn-${++connCounter}`;
    Object.defineProperty(socket, "remoteAddress", { value: key, configurable: true });
    contexts.set(key, ctx);
    sockets.set(ctx, socket);
    socket.on("close", () => {
      // The context may have changed since accept (rebind: a resumed session).
      const cur = contexts.get(key);
      contexts.delete(key);
      if (cur === undefined || dropping) return;
      sockets.delete(cur);
      hooks.closed(cur);
    });
    injector.injectConnection(socket);
  });
  net.maxConnections = opts.maxConnections;
  // accept(2) failing (EMFILE, ENFILE) is not a reason to stop serving: libuv retries.
  net.on("error", (e) => logLimited(`accept:${path}`, `brokerd: ${path}: ${e.message}`));
  let listenFd = opts.listenFd;
  if (listenFd === undefined) {
    // Never take over a socket someone is still serving (another brokerd, with its own runtime dir).
    const at = opts.bindPath ?? path;
    if (existsSync(at) && (await isLive(at)))
      throw new BrokerError(
        "UNAVAILABLE",
        `another server is accepting on ${path}; stop it first, or give this brokerd other socket paths`,
        "socket_in_use",
      );
    // Bound natively with its mode set before listen(), and served by net.Server through a dup:
    // closing the server then never unlinks the path, so the socket (and its backlog) can live on
    // in the next brokerd. A deep accept queue (the kernel caps it at somaxconn): a uid that floods
    // connect() must not fill the queue for everyone before brokerd gets to turn it away.
    listenFd = listenUnix(at, { mode: opts.mode, backlog: 4096 });
    if (opts.gid !== undefined) lchownSync(at, process.getuid?.() ?? 0, opts.gid);
  }
  const served = dupFd(listenFd);
  await new Promise<void>((resolve, reject) => {
    net.once("error", reject);
    net.listen({ fd: served }, () => resolve());
  });
  const ownFd = listenFd;
  return {
    listener: {
      fd: ownFd,
      close: () =>
        new Promise<void>((resolve) => {
          injector.destroy();
          net.close(() => resolve());
          for (const s of sockets.values()) s.destroy();
          closeFd(ownFd);
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
    rebind: (call, ctx) => {
      const key = call.getPeer();
      const old = contexts.get(key);
      if (old === undefined)
        throw new BrokerError("UNAUTHENTICATED", "this call's connection has no verified identity");
      const socket = sockets.get(old)!;
      sockets.delete(old);
      contexts.set(key, ctx);
      sockets.set(ctx, socket);
    },
    dropAll: () => {
      dropping = true;
      net.close();
      for (const s of sockets.values()) s.destroy();
    },
    closeAfter: (ctx, flushed) => {
      const socket = sockets.get(ctx);
      if (!socket) return;
      const close = () => setTimeout(() => socket.destroy(), CLOSE_AFTER_FLUSH_MS).unref();
      flushed.then(close, close);
    },
  };
}
