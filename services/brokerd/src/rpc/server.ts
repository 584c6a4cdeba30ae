// The gRPC transport: brokerd accepts each Unix connection itself, reads the peer's identity from
// the kernel (SO_PEERCRED, SO_PEERPIDFD, cgroup) on that socket, opens a Session for it, and only
// then hands the socket to grpc-js (Server.createConnectionInjector). Each socket gets a unique
// remoteAddress, which grpc-js reports as the call's getPeer(): that is how every call is
// attributed to its connection's identity and to nothing the client sends.
// HTTP/2 abuse on a connection (more stream resets than its budget, oversized headers, protocol
// errors, SETTINGS never acknowledged: rpc/http2-watch.ts) closes it with GOAWAY(ENHANCE_YOUR_CALM), and its uid's
// new connections are refused for a while (rpc/reconnect-backoff.ts) from SO_PEERCRED alone,
// answered with prebuilt frames (rpc/h2-refusal.ts) instead of an HTTP/2 session.
import { existsSync, lchownSync, unlinkSync } from "node:fs";
import { connect, createServer, type Server as NetServer, type Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { closeFd, dupFd, listenUnix, peerCred } from "@vfio-broker/native";
import { BrokerError } from "../errors.js";
import { FairShare } from "../grants/fair-share.js";
import { identityOfSocket, type PeerIdentity } from "../identity/peer.js";
import { logLimited } from "../log.js";
import { Connections } from "./connections.js";
import { refusalFrames, SERVER_PREFACE, scanClientFrames } from "./h2-refusal.js";
import { watchHttp2 } from "./http2-watch.js";
import { ReconnectBackoff } from "./reconnect-backoff.js";

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

/** How long a connection refused in backoff may take to send the HEADERS its answer needs. */
const BACKOFF_ANSWER_MS = 1000;
/** Client bytes looked at (frame headers only) before that answer; more and it is just closed. */
const BACKOFF_SCAN_BYTES = 4096;
const RESOURCE_EXHAUSTED = 8;

export { RESET_BURST, RESETS_PER_SECOND, SETTINGS_ACK_MS } from "./http2-watch.js";

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
 * Refused connections kept open to be told why: a few per tenant and a bounded number in all,
 * shared fairly among tenants with half kept for tenants that have none lingering.
 */
class Lingering {
  readonly share: FairShare;
  private readonly perTenant: number;

  constructor(
    opts: ServeOptions,
    readonly tenantOf: (uid: number) => string,
  ) {
    this.perTenant = opts.maxRefusedPerTenant ?? 8;
    const maxRefused = opts.maxRefused ?? 64;
    this.share = new FairShare(maxRefused, Math.floor(maxRefused / 2), 1);
  }

  /** tenant may keep one more refused connection lingering now. */
  mayLinger(tenant: string): boolean {
    return this.share.heldBy(tenant) < this.perTenant && this.share.check(tenant).ok;
  }

  /** Keeps a refused connection of uid open for its answer if its tenant's share allows; its release, or undefined. */
  linger(uid: number): (() => void) | undefined {
    const tenant = this.tenantOf(uid);
    if (!this.mayLinger(tenant)) return undefined;
    this.share.acquire(tenant);
    return () => this.share.release(tenant);
  }
}

/** A uid in backoff: a SETTINGS frame, then (once its first call arrives) the reason, and close. */
function refuseInBackoff(
  socket: Socket,
  uid: number,
  waitMs: number,
  lingering: Lingering,
  backoff: ReconnectBackoff,
): void {
  const release = lingering.linger(uid);
  if (!release) {
    socket.destroy();
    return;
  }
  const why = backoff.reason(lingering.tenantOf(uid));
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
}

/**
 * The listening socket at path (opts.bindPath), bound natively with its mode set before listen(),
 * or the one brokerd inherited (opts.listenFd). Never takes over a socket someone is still serving
 * (another brokerd, with its own runtime dir).
 */
async function listeningFd(path: string, opts: ServeOptions): Promise<number> {
  if (opts.listenFd !== undefined) return opts.listenFd;
  const at = opts.bindPath ?? path;
  if (existsSync(at) && (await isLive(at)))
    throw new BrokerError(
      "UNAVAILABLE",
      `another server is accepting on ${path}; stop it first, or give this brokerd other socket paths`,
      "socket_in_use",
    );
  // Served by net.Server through a dup: closing the server then never unlinks the path, so the
  // socket (and its backlog) can live on in the next brokerd. A deep accept queue (the kernel caps
  // it at somaxconn): a uid that floods connect() must not fill the queue for everyone before
  // brokerd gets to turn it away.
  const fd = listenUnix(at, { mode: opts.mode, backlog: 4096 });
  if (opts.gid !== undefined) lchownSync(at, process.getuid?.() ?? 0, opts.gid);
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
  /** The connection table (made before the services that look calls up in it). */
  conns: Connections<C> = new Connections<C>(),
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
  const backoff = opts.backoff ?? new ReconnectBackoff();
  const tenantOf = hooks.tenantOf ?? ((uid: number) => `uid:${uid}`);
  const lingering = new Lingering(opts, tenantOf);
  const stopWatch = watchHttp2(server, {
    peers: conns.peers,
    backoff,
    tenantOf,
    refused: (peer, reason) => hooks.refused?.(peer, reason),
    dropping: () => conns.dropping,
  });
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const net: NetServer = createServer((socket) =>
    accept(socket, { path, hooks, conns, lingering, backoff, inject: (s) => injector.injectConnection(s) }),
  );
  net.maxConnections = opts.maxConnections;
  // accept(2) failing (EMFILE, ENFILE) is not a reason to stop serving: libuv retries.
  net.on("error", (e) => logLimited(`accept:${path}`, `brokerd: ${path}: ${e.message}`));
  let ownFd: number | undefined;
  let served = -1;
  try {
    ownFd = await listeningFd(path, opts);
    served = dupFd(ownFd);
    const fd = served;
    await new Promise<void>((resolve, reject) => {
      net.once("error", reject);
      net.listen({ fd }, () => resolve());
    });
  } catch (e) {
    // Nothing of this socket outlives the failure (the caller's start unwinds the rest).
    stopWatch();
    injector.destroy();
    if (served >= 0) closeFd(served);
    if (ownFd !== undefined && ownFd !== opts.listenFd) {
      closeFd(ownFd);
      unlinkSync(opts.bindPath ?? path); // bound here a moment ago
    }
    throw e;
  }
  const listenFd = ownFd;
  return {
    listener: {
      fd: listenFd,
      close: () =>
        new Promise<void>((resolve) => {
          stopWatch();
          injector.destroy();
          net.close(() => resolve());
          conns.destroyAll();
          closeFd(listenFd);
        }),
    },
    contextOf: (call) => conns.contextOf(call),
    rebind: (call, ctx) => conns.rebind(call, ctx),
    dropAll: () => {
      conns.dropping = true;
      net.close();
      conns.destroyAll();
    },
    closeAfter: (ctx, flushed) => conns.closeAfter(ctx, flushed),
  };
}

/** What accepting one connection needs of its listener. */
interface AcceptContext<C> {
  path: string;
  hooks: ConnectionHooks<C>;
  conns: Connections<C>;
  lingering: Lingering;
  backoff: ReconnectBackoff;
  inject: (socket: Socket) => void;
}

/**
 * One accepted connection: its identity read from the kernel, then admitted (handed to grpc-js
 * with its context) or refused (answered with the reason for a while, or closed). Any failure
 * here is this connection's alone: it is closed, brokerd goes on.
 */
function accept<C>(socket: Socket, a: AcceptContext<C>): void {
  const { hooks, lingering } = a;
  socket.on("error", () => {});
  let identity: PeerIdentity;
  try {
    const fd = socketFd(socket);
    if (refusedEarly(socket, fd, a)) return;
    identity = identityOfSocket(fd);
  } catch (e) {
    logLimited(`refuse:${a.path}`, `brokerd: ${a.path}: refusing a connection: ${(e as Error).message}`);
    socket.destroy();
    return;
  }
  const peer = { uid: identity.uid, pid: identity.pid };
  let ctx: C;
  try {
    ctx = hooks.admit(identity);
  } catch (e) {
    closeFd(identity.pidfd);
    if (!(e instanceof BrokerError)) {
      logLimited(`refuse:${a.path}`, `brokerd: ${a.path}: ${(e as Error).message}`);
      hooks.refused?.(peer, "internal");
      socket.destroy();
      return;
    }
    hooks.refused?.(peer, e.reason);
    // A refused connection (limit, draining, not admin) still gets a gRPC answer that says why,
    // on every call, for a short while; then it is closed. It holds no session. Only a few per
    // tenant linger, and every tenant gets its turn: a user hammering the socket from any
    // number of uids gets its extra connections just closed.
    const release = lingering.linger(identity.uid);
    if (!release) {
      socket.destroy();
      return;
    }
    a.conns.lingerRefused(socket, peer, e, release);
    a.inject(socket);
    return;
  }
  a.conns.admitted(socket, peer, ctx, (c) => hooks.closed(c));
  a.inject(socket);
}

/**
 * From SO_PEERCRED alone, before the /proc reads of a full identity: a uid in backoff, or one that
 * cannot be admitted whatever else is true of it, is turned away (true). Only while some uid is in
 * backoff, or some tenant has refused connections lingering (and so a uid may be hopeless), does
 * this cost an extra syscall (identityOfSocket reads SO_PEERCRED itself).
 */
function refusedEarly<C>(socket: Socket, fd: number, a: AcceptContext<C>): boolean {
  const { hooks, lingering, backoff } = a;
  if (!(backoff.size > 0 || (hooks.hopeless && lingering.share.active > 0))) return false;
  const cred = peerCred(fd);
  const tenant = lingering.tenantOf(cred.uid);
  const waitMs = backoff.remaining(tenant, Date.now());
  if (waitMs > 0) {
    hooks.refused?.({ uid: cred.uid, pid: cred.pid }, "backoff");
    refuseInBackoff(socket, cred.uid, waitMs, lingering, backoff);
    return true;
  }
  if (hooks.hopeless && !lingering.mayLinger(tenant) && hooks.hopeless(cred.uid)) {
    hooks.refused?.({ uid: cred.uid, pid: cred.pid }, "limit:sessions");
    socket.destroy();
    return true;
  }
  return false;
}
