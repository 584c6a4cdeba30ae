// The fd channel's transport (docs/design.md): a Unix stream socket beside the gRPC one, framed as
// a 4-byte big-endian length and a message, replies carrying fds with SCM_RIGHTS. It owns the
// listening socket, each connection from accept to close, the framing and the idle close, and
// what a connection's unread replies hold in the kernel. It owns no protocol: what a frame means
// and what to answer is its adapter's (FdProtocol, fdpass/adapter.ts), and whether a connection is
// admitted and what it is charged is the core's (sessions/fd-connections.ts). It never decides a
// quota, a grant or an event itself.
//
// Every client here is untrusted: it may close mid-reply, never read, send garbage or open many
// connections. So each connection is served by one loop that owns it and treats any failure as
// that client's disconnect (never brokerd's), and brokerd's copy of a delivered fd is closed at once.
//
// The fds of a reply the client has not read stay in flight in the kernel (one open file each) for
// as long as the client keeps its socket, whatever brokerd does with its end. So they are counted
// (fdpass/unread.ts, from SIOCOUTQ) per connection and charged to its identity (the core's
// unreadFds quota): a connection whose unread replies hold UNREAD_FDS_PER_CONNECTION fds (or
// UNREAD_BYTES_PER_CONNECTION bytes) is not read from, an identity at its quota gets no request
// that would add fds served, and a connection brokerd is done with is closed only once its replies
// are read (or its peer left), counted all the while. A paused connection is looked at again on a
// timer: the kernel gives the writer no wake-up when the reader takes a few bytes (POLLOUT comes
// only once three quarters of the send buffer are free), so a timer that starts at 1 ms and backs
// off to 64 ms is what notices an honest client that read its replies.

import { FdServer, type FdSocket, frameNotSent, peerCred } from "@vfio-broker/native";
import { nofileLimit } from "../fd-budget.js";
import { FairShare } from "../grants/fair-share.js";
import { identityOfSocket, type PeerIdentity } from "../identity/peer.js";
import { logLimited } from "../log.js";
import { FdAccount, type FdConnectionPeer, type FdConnections } from "../sessions/fd-connections.js";
import { classifyDeliveryFailure, type DeliveryFailure } from "./delivery-failure.js";
import { UnreadReplies } from "./unread.js";

export const DEFAULT_IDLE_MS = 30_000;
/** The most fds one reply carries (a full FdBatch). */
export const MAX_REPLY_FDS = 32;
/**
 * Refusals answered at once, shared fairly among tenants (half kept for tenants answered nothing
 * yet); more connections over quota are closed without a word.
 */
const MAX_REFUSING = 32;
/** A reply not taken by the client within this long: the client is not reading, drop it. */
const SEND_TIMEOUT_MS = 5000;
/** A connection whose unread replies hold this many fds (one full batch) is not read from. */
export const UNREAD_FDS_PER_CONNECTION = MAX_REPLY_FDS;
/** Nor one whose unread replies take this much kernel memory (replies without fds count here). */
export const UNREAD_BYTES_PER_CONNECTION = 64 * 1024;
/** A paused connection is looked at again after 1 ms, then 2, 4, ... up to this (ms). */
const PAUSED_RECHECK_MAX_MS = 64;
/** A connection brokerd is done with, whose replies are unread, is looked at this often at most (ms). */
const LINGER_RECHECK_MAX_MS = 1000;
/** Frames served in a row on one connection before the others get a turn (else a client whose next
 * frame is always there is served alone, in microtasks: a 100 ms+ p99 for 64 busy sessions). */
const FRAMES_PER_TURN = 4;

/** One served connection as its adapter sees it. */
export interface FdConnection {
  /** The kernel-verified peer (SO_PEERCRED). */
  readonly peer: FdConnectionPeer;
  /**
   * Sends one reply: its bytes and fds count as unread from the moment they are in the kernel.
   * By the time this returns (before it settles) the fds are in the kernel or privately dup'ed:
   * the caller may close its own at once. Rejects when the client does not take it.
   */
  reply(bytes: Uint8Array, fds?: number[]): Promise<void>;
  /** Waits until a reply carrying `fds` fds fits the identity's unreadFds quota; false: close. */
  room(fds: number): Promise<boolean>;
  /** The peer's full identity from the kernel (identity/peer.ts); the caller owns its pidfd. */
  identify(): PeerIdentity;
  /** The connection is a session's lease from now on: no idle close. */
  holdOpen(): void;
  /** Serve it no more: it closes once its replies are read (or its peer left). Idempotent. */
  end(): void;
  /** Frames brokerd holds unsent because the peer is not reading. */
  readonly queued: number;
}

/** What the transport asks of the protocol spoken over it (fdpass/adapter.ts). */
export interface FdProtocol {
  /** The largest request frame. */
  readonly maxRequestBytes: number;
  /** The reply to a frame that cannot be read (over the limit, fds sent, cut by EOF); then it closes. */
  badFrame(e: Error, peer: FdConnectionPeer): Uint8Array;
  /** The reply to a refused connection. */
  busy(message: string): Uint8Array;
  /** Serves one request frame; false: the connection is served no more. */
  serve(conn: FdConnection, frame: Uint8Array): Promise<boolean>;
  /** brokerd serves nothing more (a hand-over froze it): a paused connection stops waiting. */
  stopped(): boolean;
  /** The connection is served no more (its peer left, idled, or it was ended); called once. */
  closed?(conn: FdConnection): void;
}

export interface FdTransportOptions {
  path: string;
  mode: number;
  idleMs?: number;
  /** Where to bind path: the same name through its verified directory's fd (places.ts). */
  bindPath?: string;
  /** An already listening socket at path (hand-over, fdstore) instead of binding one. */
  listenFd?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** Rejects after ms (for a send to a client that never reads); the timer never keeps brokerd up. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error(`${what} took over ${ms} ms`), { code: "ETIMEDOUT" })),
      ms,
    );
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** What a failed reply carrying fds was (by errno), and whether nothing of it left brokerd. */
export function sendFailure(e: unknown): DeliveryFailure {
  return classifyDeliveryFailure(e, frameNotSent(e), {
    uid: process.geteuid?.() ?? 0,
    nofile: nofileLimit(),
  });
}

/** One served connection: its socket, whose it is, and what its replies hold in flight. */
class Conn implements FdConnection {
  readonly unread = new UnreadReplies();
  /** SIOCOUTQ when last looked at. */
  outq = 0;
  /** Private fd dups held for a reply whose send would block. */
  held = 0;
  /** What the core charges the identity for this connection (set once admitted). */
  account!: FdAccount;
  /** A session's lease: never closed for idling. */
  leased = false;
  /** end() was called: resolves the serve loop's wait. */
  ended = false;
  private wake: (() => void) | undefined;

  constructor(
    readonly sock: FdSocket,
    readonly peer: FdConnectionPeer,
    private readonly transport: FdTransport,
  ) {}

  reply(bytes: Uint8Array, fds: number[] = []): Promise<void> {
    return this.transport.send(this.sock, bytes, fds, this);
  }
  room(fds: number): Promise<boolean> {
    return this.transport.room(this, fds);
  }
  identify(): PeerIdentity {
    return identityOfSocket(this.sock.fd);
  }
  holdOpen(): void {
    this.leased = true;
  }

  end(): void {
    this.ended = true;
    this.wake?.();
  }

  /**
   * Settles when end() is called. A fresh promise for each wait: racing one long-lived promise in
   * every read would pile a reaction onto it per frame, held until the connection ends (a flood of
   * frames on one connection would grow brokerd's heap without bound).
   */
  stopping(): Promise<null> {
    if (this.ended) return Promise.resolve(null);
    return new Promise<null>((resolve) => {
      this.wake = () => resolve(null);
    });
  }

  get queued(): number {
    return this.sock.pendingSends;
  }
}

export class FdTransport {
  private readonly server: FdServer;
  private readonly conns = new Set<FdSocket>();
  /** Connections being told they are refused right now, by tenant. */
  private readonly refusing = new FairShare(MAX_REFUSING, MAX_REFUSING / 2, 1);
  private closed = false;

  constructor(
    private readonly connections: FdConnections,
    private readonly protocol: FdProtocol,
    private readonly opts: FdTransportOptions,
  ) {
    this.server =
      opts.listenFd !== undefined
        ? FdServer.adopt(opts.bindPath ?? opts.path, opts.listenFd)
        : FdServer.listen(opts.bindPath ?? opts.path, { mode: opts.mode });
    this.server.onConnection((sock) => {
      void this.own(sock);
    });
  }

  /** Owns one connection from accept to close: whatever happens inside stays with this client. */
  private async own(sock: FdSocket): Promise<void> {
    let conn: Conn | undefined;
    try {
      let peer: FdConnectionPeer;
      try {
        peer = peerCred(sock.fd);
      } catch {
        return; // the peer is gone already
      }
      const c = new Conn(sock, peer, this);
      const admitted = this.connections.admit(peer, () => this.settle(c));
      if (!(admitted instanceof FdAccount)) {
        await this.refuse(sock, admitted.tenant, admitted.message);
        return;
      }
      c.account = admitted;
      conn = c;
      this.conns.add(sock);
      try {
        await this.serve(c);
      } catch (e) {
        // A client closing mid-reply (EPIPE, ECONNRESET), a send that timed out, anything else:
        // it ends this connection only.
        logLimited("fd-channel", `brokerd: fd channel: closing a connection: ${(e as Error).message}`);
      } finally {
        c.end();
        this.protocol.closed?.(c);
      }
      // Done with it; but what its unread replies hold stays in flight until the peer reads them
      // or closes its end, so the connection stays, counted, until then.
      await this.linger(c);
    } catch (e) {
      logLimited("fd-channel", `brokerd: fd channel: closing a connection: ${(e as Error).message}`);
    } finally {
      if (conn) this.forget(conn);
      this.conns.delete(sock);
      sock.close();
    }
  }

  /** Reads and serves requests in order until the peer leaves, idles or the adapter says stop. */
  private async serve(c: Conn): Promise<void> {
    const { sock } = c;
    const idleMs = this.opts.idleMs ?? DEFAULT_IDLE_MS;
    for (let served = 0; ; ) {
      // Not read from while its unread replies hold a batch's worth (the peer reads, or leaves).
      if (!(await this.readable(c)) || c.ended) return;
      let timer: NodeJS.Timeout | undefined;
      const idle = c.leased // a session's lease never idles: no timer, no promise for it
        ? undefined
        : new Promise<null>((resolve) => {
            timer = setTimeout(() => resolve(null), idleMs);
          });
      const recv = sock.recv({ maxBytes: this.protocol.maxRequestBytes, maxFds: 0, keepOpenOnError: true });
      let msg: Awaited<ReturnType<FdSocket["recv"]>>;
      try {
        msg = await Promise.race(idle ? [recv, idle, c.stopping()] : [recv, c.stopping()]);
      } catch (e) {
        // A frame over the limit, fds sent to us, a frame cut by EOF: the stream position is lost.
        // Say so, then close (the socket stays open for this one reply).
        await this.send(sock, this.protocol.badFrame(e as Error, c.peer)).catch(() => {});
        return;
      } finally {
        clearTimeout(timer);
      }
      if (!msg || c.ended || !(await this.protocol.serve(c, msg.data))) return;
      if (++served % FRAMES_PER_TURN === 0) await new Promise((r) => setImmediate(r));
    }
  }

  // ---- fds in replies not read yet ------------------------------------------------------------

  /** Charges the identity what the connection's replies hold now (as counted, without asking the kernel). */
  private recharge(c: Conn): void {
    c.account.charge(c.unread.fds);
  }

  /** Asks the kernel what the peer has not read (SIOCOUTQ) and updates the counts. */
  private settle(c: Conn): void {
    try {
      c.outq = c.sock.unreadBytes();
    } catch {
      c.outq = 0; // the socket is gone: nothing of it is in flight any more
    }
    c.unread.settle(c.outq);
    this.recharge(c);
  }

  /**
   * Waits until ok() holds (false if brokerd closes or stops meanwhile), looking at the kernel's
   * counts again on a backing-off timer. While it waits the connection is not read from.
   */
  private until(c: Conn, ok: () => boolean, identityWide: boolean): Promise<boolean> {
    this.settle(c);
    return ok() ? Promise.resolve(true) : this.wait(c, ok, identityWide); // no async frame in the usual case
  }

  private async wait(c: Conn, ok: () => boolean, identityWide: boolean): Promise<boolean> {
    let paused = false;
    let delay = 1;
    try {
      for (;;) {
        if (identityWide) c.account.settleIdentity();
        if (ok()) return true;
        if (this.closed || this.protocol.stopped() || c.ended) return false;
        if (!paused) {
          paused = true;
          this.connections.paused(1);
        }
        await sleep(delay);
        delay = Math.min(delay * 2, PAUSED_RECHECK_MAX_MS);
        this.settle(c);
      }
    } finally {
      if (paused) this.connections.paused(-1);
    }
  }

  /** The connection may be read from: its own unread replies are under a batch's worth. */
  private readable(c: Conn): Promise<boolean> {
    // Counts never below the truth (no reply half sent) allow a read without asking the kernel (room() does).
    const ok = () =>
      c.account.unreadFds < UNREAD_FDS_PER_CONNECTION && c.unread.outq < UNREAD_BYTES_PER_CONNECTION;
    return c.sock.pendingSends === 0 && ok() ? Promise.resolve(true) : this.until(c, ok, false);
  }

  /** A request whose reply may carry `want` fds may be served (FdConnection.room). */
  room(c: Conn, want: number): Promise<boolean> {
    if (want === 0) return Promise.resolve(true);
    return this.until(c, () => c.account.roomFor(want), true);
  }

  /** Keeps a connection brokerd is done with until its replies are read or its peer left. */
  private async linger(c: Conn): Promise<void> {
    // A reply still waiting in brokerd goes no further: its fds are closed here.
    c.sock.dropUnsent();
    this.settle(c);
    let delay = 10;
    while (c.account.unreadFds > 0 && !this.closed) {
      await sleep(delay);
      delay = Math.min(delay * 2, LINGER_RECHECK_MAX_MS);
      this.settle(c);
    }
  }

  /** The connection is closing: nothing of it is counted any more, and the core takes back its charges. */
  private forget(c: Conn): void {
    c.sock.dropUnsent();
    c.unread.hold(-c.unread.fds);
    c.unread.settle(0);
    this.recharge(c);
    this.connections.release(c.account);
  }

  /** Answers a refused connection, unless its tenant has its share of refusals in flight already. */
  private async refuse(sock: FdSocket, tenant: string, message: string): Promise<void> {
    // Refusals in flight hold an fd each too; a client reconnecting in a tight loop must not turn
    // them into an unbounded number: past its tenant's share of a few, a refused connection is
    // just closed.
    if (!this.refusing.acquire(tenant).ok) return;
    try {
      await this.send(sock, this.protocol.busy(message)).catch(() => {});
    } finally {
      this.refusing.release(tenant);
    }
  }

  /**
   * Sends one frame; on a served connection its bytes and fds are counted as unread from the moment
   * they are in the kernel, and as held while brokerd keeps them because the send would block (at
   * most HELD_REPLY_FDS such fds in all; past that the reply is taken back, its fds closed, and the
   * connection is served no more).
   */
  async send(sock: FdSocket, bytes: Uint8Array, fds: number[] = [], c?: Conn): Promise<void> {
    const sending = sock.send(bytes, fds);
    if (c) {
      const frame = 4 + bytes.length;
      if (sock.pendingSends === 0) {
        c.unread.sentReply(frame, fds.length);
        this.recharge(c);
        // Refused whole by sendmsg (ETOOMANYREFS: nothing of it is in the kernel): not unread.
        const n = fds.length;
        sending.catch((e) => {
          if (!frameNotSent(e)) return;
          c.unread.unsent(frame, n);
          this.recharge(c);
        });
      } else {
        const held = sock.heldFds;
        if (!this.connections.holdReplyFds(held)) {
          // Taken back before any of it went out (its dups closed); the connection is served no
          // more, and lingers, counted, while its earlier replies are unread.
          sending.catch(() => {});
          sock.dropUnsent();
          throw new Error(
            `brokerd holds ${this.connections.heldReplyFds} fds of replies that would block, its limit; closing a connection that does not read`,
          );
        }
        c.held = held;
        c.unread.hold(fds.length);
        this.recharge(c);
        sending
          .then(() => c.unread.sentReply(frame, fds.length))
          .catch(() => {})
          .finally(() => {
            c.unread.hold(-fds.length);
            this.connections.releaseReplyFds(c.held);
            c.held = 0;
            this.recharge(c);
          });
      }
    }
    if (sock.pendingSends === 0)
      await sending; // it went out (or failed) in the call: no timer
    else await within(sending, SEND_TIMEOUT_MS, "the reply");
  }

  /**
   * A hand-over froze brokerd: new connections wait in the backlog for the successor (or for
   * this brokerd again if it is aborted) instead of reaching a brokerd that only closes them.
   */
  pauseAccepting(): void {
    this.server.pause();
  }

  resumeAccepting(): void {
    this.server.resume();
  }

  /** How many connections are open now (for tests and metrics). */
  get connectionCount(): number {
    return this.conns.size;
  }

  /** The listening fd (for the fdstore and hand-over). */
  get listenFd(): number {
    return this.server.fd;
  }

  /** keepPath: the socket lives on (fdstore, the next brokerd): its file stays. */
  close(opts: { keepPath?: boolean } = {}): void {
    this.closed = true;
    this.server.close(opts);
    for (const c of this.conns) c.close();
  }
}
