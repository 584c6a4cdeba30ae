// The gRPC transport: brokerd accepts each Unix connection itself, reads the peer's identity from
// the kernel (SO_PEERCRED, SO_PEERPIDFD, cgroup) on that socket, opens a Session for it, and only
// then hands the socket to grpc-js (Server.createConnectionInjector). Each socket gets a unique
// remoteAddress, which grpc-js reports as the call's getPeer(): that is how every call is
// attributed to its connection's identity and to nothing the client sends.
// HTTP/2 abuse on a connection (more stream resets than its budget, oversized headers, protocol
// errors, SETTINGS never acknowledged) closes it with GOAWAY(ENHANCE_YOUR_CALM), and its uid's
// new connections are refused for a while (rpc/reconnect-backoff.ts) from SO_PEERCRED alone,
// answered with prebuilt frames (rpc/h2-refusal.ts) instead of an HTTP/2 session.
import { existsSync, lchownSync, unlinkSync } from "node:fs";
import { constants as h2, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import { connect, createServer, type Server as NetServer, type Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { closeFd, dupFd, listenUnix, peerCred } from "@vfio-broker/native";
import { BrokerError } from "../errors.js";
import { FairShare } from "../grants/fair-share.js";
import { identityOfSocket, type PeerIdentity } from "../identity/peer.js";
import { logLimited } from "../log.js";
import { Connections } from "./connections.js";
import { ENHANCE_YOUR_CALM, refusalFrames, SERVER_PREFACE, scanClientFrames } from "./h2-refusal.js";
import { limitHttp2, MAX_HEADER_LIST_SIZE } from "./http2-limits.js";
import { ReconnectBackoff } from "./reconnect-backoff.js";
import { TokenBucket } from "./token-bucket.js";

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
  /**
   * The tenant (identity/subuid.ts) a uid belongs to, as a FairShare key: refused connections
   * linger per tenant (default: every uid its own).
   */
  tenantOf?(uid: number): string;
}

export interface ServeOptions {
  mode: number;
  gid?: number;
  /**
   * Connections served at once, admitted or lingering refused (net.Server.maxConnections: more
   * are closed at accept). It bounds brokerd's fds for this socket whatever clients do.
   */
  maxConnections: number;
  /**
   * Refused connections kept to answer with the reason, per tenant and in all, shared fairly
   * among tenants with half kept for tenants that have none lingering (more are just closed).
   */
  maxRefusedPerTenant?: number;
  maxRefused?: number;
  /** An already listening socket at path (hand-over, fdstore) instead of binding one. */
  listenFd?: number;
  /** Reconnect backoff per uid after HTTP/2 abuse (default: one of its own, DEFAULT_BACKOFF). */
  backoff?: ReconnectBackoff;
  /**
   * Where to bind `path`: the same name reached through its verified directory's fd
   * (/proc/self/fd/N/NAME, places.ts), so the bind cannot be redirected. Default: path.
   */
  bindPath?: string;
}

/**
 * HTTP/2 streams one connection may see reset or cancelled (by either side): a burst, then a
 * rate. Rapid reset cancels thousands a second. An honest client cancels a call when its deadline
 * passes, which under a loaded brokerd may be every call it has in flight (32) each second.
 */
export const RESET_BURST = 64;
export const RESETS_PER_SECOND = 32;
/** A connection must acknowledge brokerd's SETTINGS (its small header table) within this. */
export const SETTINGS_ACK_MS = 10_000;
/** How long a connection refused in backoff may take to send the HEADERS its answer needs. */
const BACKOFF_ANSWER_MS = 1000;
/** Client bytes looked at (frame headers only) before that answer; more and it is just closed. */
const BACKOFF_SCAN_BYTES = 4096;
const RESOURCE_EXHAUSTED = 8;

let connCounter = 0;

/** How long a refused connection is kept to answer its calls with the reason. */
const REFUSED_LINGER_MS = 2000;

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
  connections: Connections<C> = new Connections<C>(),
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
  const maxRefusedPerTenant = opts.maxRefusedPerTenant ?? 8;
  // Every connection handed to grpc-js, by its key: whose it is, for the HTTP/2 session watch.
  const peers = new Map<string, { uid: number; pid: number }>();
  const backoff = opts.backoff ?? new ReconnectBackoff();
  const maxRefused = opts.maxRefused ?? 64;
  const lingering = new FairShare(maxRefused, Math.floor(maxRefused / 2), 1);
  const tenantOf = hooks.tenantOf ?? ((uid: number) => `uid:${uid}`);
  /** tenant may keep one more refused connection lingering now. */
  const mayLinger = (tenant: string) =>
    lingering.heldBy(tenant) < maxRefusedPerTenant && lingering.check(tenant).ok;
  let dropping = false;

  /** Keeps a refused connection of uid open for its answer if its tenant's share allows; its release, or undefined. */
  const linger = (uid: number): (() => void) | undefined => {
    const tenant = tenantOf(uid);
    if (!mayLinger(tenant)) return undefined;
    lingering.acquire(tenant);
    return () => lingering.release(tenant);
  };

  /** In backoff: a SETTINGS frame, then (once its first call arrives) the reason, and close. */
  const refuseInBackoff = (socket: Socket, uid: number, waitMs: number) => {
    const release = linger(uid);
    if (!release) {
      socket.destroy();
      return;
    }
    const why = backoff.reason(tenantOf(uid));
    const message =
      `brokerd: uid ${uid} may not connect for ${Math.ceil(waitMs / 1000)} s more: brokerd closed one of the ` +
      `connections of its user (all its uids count as one) for ${why || "HTTP/2 abuse"}; each further abuse doubles the wait, up to ` +
      `${backoff.opts.maxMs / 1000} s`;
    const timer = setTimeout(() => socket.destroy(), BACKOFF_ANSWER_MS);
    socket.on("close", () => {
      clearTimeout(timer);
      release();
    });
    let seen: Buffer | undefined = Buffer.alloc(0);
    socket.on("data", (d: Buffer) => {
      if (seen === undefined) return;
      seen = Buffer.concat([seen, d]);
      const scan = scanClientFrames(seen);
      if (scan === "more" && seen.length <= BACKOFF_SCAN_BYTES) return;
      seen = undefined;
      if (scan !== "headers") {
        socket.destroy();
        return;
      }
      // Answered: nothing more is read (the peer's writes fill its buffer, not brokerd's loop).
      socket.pause();
      socket.end(refusalFrames(RESOURCE_EXHAUSTED, message));
    });
    socket.write(SERVER_PREFACE);
  };

  /** Watches one HTTP/2 session: its resets, header sizes, errors and SETTINGS acknowledgement. */
  const watchSession = (session: ServerHttp2Session) => {
    const key = session.socket?.remoteAddress;
    const peer = key === undefined ? undefined : peers.get(key);
    if (!peer) return;
    const resets = new TokenBucket(RESET_BURST, RESETS_PER_SECOND, Date.now());
    // Streams Node refused before JavaScript saw them (over max_concurrent_streams, too many header
    // fields) are reset too: the peer opened (lastProcStreamID + 1) / 2 streams, we saw `seen`.
    let seen = 0;
    let unseen = 0;
    let struck = false;
    const abuse = (reason: string, what: string) => {
      if (struck || dropping || session.destroyed) return;
      struck = true;
      const waitMs = backoff.strike(tenantOf(peer.uid), Date.now(), what);
      hooks.refused?.(peer, reason);
      const message = `brokerd: ${what}; uid ${peer.uid} (and every uid of its user) may not connect for ${Math.ceil(waitMs / 1000)} s`;
      try {
        // New streams past the last one processed are ignored from here on, without a callback.
        session.goaway(ENHANCE_YOUR_CALM, session.state.lastProcStreamID ?? 0, Buffer.from(message));
      } catch {
        /* closed already */
      }
      // A moment for the GOAWAY to leave, then the connection goes (and its session with it).
      setTimeout(() => session.destroy(), 50).unref();
    };
    const reset = (n: number) => {
      if (n <= 0 || resets.take(Date.now(), n)) return;
      abuse(
        "limit:resets",
        `more than ${RESET_BURST} HTTP/2 streams reset, refused or cancelled on one connection at once, or ` +
          `over ${RESETS_PER_SECOND} a second after that`,
      );
    };
    const checkUnseen = () => {
      if (session.destroyed) return;
      const opened = Math.floor(((session.state.lastProcStreamID ?? 0) + 1) / 2);
      const now = Math.max(0, opened - seen);
      if (now > unseen) reset(now - unseen);
      unseen = now;
    };
    watched.add(checkUnseen);
    // And once more as the session goes (its state is gone by 'close'): a peer whose connection
    // Node ended for it (nghttp2's own reset limit) is struck before it reconnects.
    const destroy = session.destroy;
    session.destroy = (...args: Parameters<typeof destroy>) => {
      checkUnseen();
      return destroy.apply(session, args);
    };
    session.on("stream", (stream: ServerHttp2Stream, _h: unknown, _f: unknown, rawHeaders?: string[]) => {
      seen++;
      // Each field as HPACK counts it: name + value + 32 (rawHeaders is [name, value, ...]).
      let bytes = 0;
      for (const h of rawHeaders ?? []) bytes += h.length + 16;
      if (bytes > MAX_HEADER_LIST_SIZE)
        abuse("limit:headers", `a request carried ${bytes} bytes of headers, over ${MAX_HEADER_LIST_SIZE}`);
      stream.once("close", () => {
        if (stream.rstCode !== h2.NGHTTP2_NO_ERROR) reset(1);
      });
    });
    // Node's HTTP/2 errors (a protocol error, too many invalid frames or refused streams), not the
    // socket's (a client that exits mid-call resets its connection: that is no abuse).
    session.once("error", (e: NodeJS.ErrnoException) => {
      if (e.code?.startsWith("ERR_HTTP2")) abuse("protocol", `an HTTP/2 protocol error (${e.message})`);
    });
    const ack = setTimeout(
      () =>
        abuse(
          "settings-timeout",
          `brokerd's HTTP/2 SETTINGS not acknowledged in ${SETTINGS_ACK_MS / 1000} s`,
        ),
      SETTINGS_ACK_MS,
    );
    ack.unref();
    session.once("localSettings", () => clearTimeout(ack));
    session.once("close", () => {
      clearTimeout(ack);
      watched.delete(checkUnseen);
    });
  };
  // Node refuses streams without telling JavaScript: look every 200 ms while sessions are open.
  const watched = new Set<() => void>();
  const sweep = setInterval(() => {
    for (const check of watched) check();
  }, 200);
  sweep.unref();
  limitHttp2(server, watchSession);
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  const net: NetServer = createServer((socket) => {
    // Any failure here is this connection's alone: it is closed, brokerd goes on.
    socket.on("error", () => {});
    let identity: PeerIdentity;
    try {
      const fd = socketFd(socket);
      // Only while some uid is in backoff, or some tenant has refused connections lingering (and so
      // a uid may be hopeless), does this cost an extra syscall (identityOfSocket reads SO_PEERCRED
      // itself).
      if (backoff.size > 0 || (hooks.hopeless && lingering.active > 0)) {
        const cred = peerCred(fd);
        const waitMs = backoff.remaining(tenantOf(cred.uid), Date.now());
        if (waitMs > 0) {
          hooks.refused?.({ uid: cred.uid, pid: cred.pid }, "backoff");
          refuseInBackoff(socket, cred.uid, waitMs);
          return;
        }
        if (hooks.hopeless && !mayLinger(tenantOf(cred.uid)) && hooks.hopeless(cred.uid)) {
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
      // tenant linger, and every tenant gets its turn: a user hammering the socket from any
      // number of uids gets its extra connections just closed.
      const release = linger(identity.uid);
      if (!release) {
        socket.destroy();
        return;
      }
      const key = `vfio-broker-refused-${++connCounter}`;
      Object.defineProperty(socket, "remoteAddress", { value: key, configurable: true });
      connections.refuse(key, e);
      peers.set(key, peer);
      const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
      socket.on("close", () => {
        clearTimeout(timer);
        connections.forgive(key);
        peers.delete(key);
        release();
      });
      injector.injectConnection(socket);
      return;
    }
    const key = `vfio-broker-conn-${++connCounter}`;
    Object.defineProperty(socket, "remoteAddress", { value: key, configurable: true });
    connections.admitted(key, ctx, socket);
    peers.set(key, { uid: identity.uid, pid: identity.pid });
    socket.on("close", () => {
      peers.delete(key);
      // The context may have changed since accept (rebind: a resumed session).
      const cur = connections.closed(key);
      if (cur === undefined || dropping) return;
      connections.forget(cur);
      hooks.closed(cur);
    });
    injector.injectConnection(socket);
  });
  net.maxConnections = opts.maxConnections;
  // accept(2) failing (EMFILE, ENFILE) is not a reason to stop serving: libuv retries.
  net.on("error", (e) => logLimited(`accept:${path}`, `brokerd: ${path}: ${e.message}`));
  const at = opts.bindPath ?? path;
  let listenFd = opts.listenFd;
  let served = -1;
  try {
    if (listenFd === undefined) {
      // Never take over a socket someone is still serving (another brokerd, with its own runtime dir).
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
    served = dupFd(listenFd);
    await new Promise<void>((resolve, reject) => {
      net.once("error", reject);
      net.listen({ fd: served }, () => resolve());
    });
  } catch (e) {
    // Nothing of this socket outlives the failure (the caller's start unwinds the rest).
    clearInterval(sweep);
    injector.destroy();
    if (served >= 0) closeFd(served);
    if (listenFd !== undefined && listenFd !== opts.listenFd) {
      closeFd(listenFd);
      unlinkSync(at); // bound here a moment ago
    }
    throw e;
  }
  const ownFd = listenFd;
  return {
    listener: {
      fd: ownFd,
      close: () =>
        new Promise<void>((resolve) => {
          clearInterval(sweep);
          injector.destroy();
          net.close(() => resolve());
          connections.destroyAll();
          closeFd(ownFd);
        }),
    },
    contextOf: (call) => connections.contextOf(call),
    rebind: (call, ctx) => connections.rebind(call, ctx),
    dropAll: () => {
      dropping = true;
      net.close();
      connections.destroyAll();
    },
    closeAfter: (ctx, flushed) => connections.closeAfter(ctx, flushed),
  };
}
