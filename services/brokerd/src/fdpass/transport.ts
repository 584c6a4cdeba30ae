// The fd channel's transport (docs/design.md): a Unix stream socket beside the gRPC one, framed as
// a 4-byte big-endian length and a message, replies carrying fds with SCM_RIGHTS. It owns the
// listening socket, each connection from accept to close, the framing and the idle close, and
// what a connection's unread replies hold in the kernel. It owns no protocol: what a frame means
// and what to answer is its adapter's (FdProtocol, fdpass/adapter.ts), and whether a connection is
// admitted and what it is charged is the core's (sessions/fd-connections.ts). It never decides a
// quota, a grant or an event itself.
//
// Every client here is untrusted: it may close mid-reply, never read, send garbage or open many
// connections. So each connection is served in order, frame by frame, by callbacks that own it (no
// suspended async call per idle connection) and treat any failure as that client's disconnect
// (never brokerd's), and brokerd's copy of a delivered fd is closed at once.
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

import {
  type FdMessage,
  FdServer,
  type FdSocket,
  frameNotSent,
  peerCred,
  type RecvLimits,
  SENT,
} from "@vfio-broker/native";
import { nofileLimit } from "../fd-budget.js";
import { FairShare } from "../grants/fair-share.js";
import { logLimited } from "../log.js";
import { FdAccount, type FdConnectionPeer, type FdConnections } from "../sessions/fd-connections.js";
import { Conn } from "./conn.js";
import { type FdProtocol, serveFrame } from "./connection.js";
import { classifyDeliveryFailure, type DeliveryFailure } from "./delivery-failure.js";

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

export type { FdConnection, FdProtocol } from "./connection.js";

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

const closing = (e: unknown) =>
  logLimited("fd-channel", `brokerd: fd channel: closing a connection: ${(e as Error).message}`);

/** What a failed reply carrying fds was (by errno), and whether nothing of it left brokerd. */
export function sendFailure(e: unknown): DeliveryFailure {
  return classifyDeliveryFailure(e, frameNotSent(e), {
    uid: process.geteuid?.() ?? 0,
    nofile: nofileLimit(),
  });
}

export class FdTransport {
  private readonly server: FdServer;
  private readonly conns = new Set<FdSocket>();
  /** Connections being told they are refused right now, by tenant. */
  private readonly refusing = new FairShare(MAX_REFUSING, MAX_REFUSING / 2, 1);
  private closed = false;
  private readonly limits: Readonly<RecvLimits>; // one object, kept by every pending recv

  constructor(
    private readonly connections: FdConnections,
    private readonly protocol: FdProtocol,
    private readonly opts: FdTransportOptions,
  ) {
    this.server =
      opts.listenFd !== undefined
        ? FdServer.adopt(opts.bindPath ?? opts.path, opts.listenFd)
        : FdServer.listen(opts.bindPath ?? opts.path, { mode: opts.mode });
    this.limits = Object.freeze({ maxBytes: protocol.maxRequestBytes, maxFds: 0, keepOpenOnError: true });
    this.server.onConnection((sock) => this.own(sock));
  }

  /** Owns one connection from accept to close; between frames, one pending recv() and its callbacks. */
  private own(sock: FdSocket): void {
    let peer: FdConnectionPeer;
    try {
      peer = peerCred(sock.fd);
    } catch {
      sock.close(); // the peer is gone already
      return;
    }
    const c = new Conn(sock, peer, this);
    try {
      const admitted = this.connections.admit(peer, c);
      if (admitted instanceof FdAccount) {
        c.account = admitted;
        this.conns.add(sock);
        this.next(c);
      } else void this.refuse(sock, admitted.tenant, admitted.message).finally(() => sock.close());
    } catch (e) {
      closing(e); // never brokerd's: this connection only
      if (c.account) this.finish(c);
      else sock.close();
    }
  }

  /** Reads the next request once its unread replies are under a batch's worth (the peer reads, or leaves). */
  private next(c: Conn): void {
    try {
      // Counts never below the truth (no reply half sent) allow a read without asking the kernel (room() does).
      if (!c.ended && (c.sock.pendingSends > 0 || !this.mayRead(c))) this.settle(c);
      if (c.ended || this.mayRead(c)) this.read(c);
      else
        this.wait(c, () => this.mayRead(c), false).then(
          (ok) => (ok ? this.read(c) : this.finish(c)),
          (e: unknown) => this.finish(c, e),
        );
    } catch (e) {
      this.finish(c, e);
    }
  }

  private read(c: Conn): void {
    if (c.ended) {
      this.finish(c);
      return;
    }
    if (!c.leased) c.timer = setTimeout(() => c.end(), this.opts.idleMs ?? DEFAULT_IDLE_MS);
    c.reading = true; // (a session's lease never idles: no timer for it)
    try {
      c.sock.receive(this.limits, c); // the frame comes to c.onFrame, then delivered()
    } catch (e) {
      this.received(c);
      this.finish(c, e);
    }
  }

  /** The pending receive() settled (Conn.onFrame): serve the frame, or answer a bad one and close. */
  delivered(c: Conn, err: Error | null, msg: FdMessage | null): void {
    if (!this.received(c)) return;
    if (!err) {
      this.frame(c, msg);
      return;
    }
    // A frame over the limit, fds sent to us, a frame cut by EOF: the stream position is lost.
    // Say so, then close (the socket stays open for this one reply).
    new Promise<void>((r) => r(this.send(c.sock, this.protocol.badFrame(err, c.peer))))
      .catch(() => {})
      .then(() => this.finish(c));
  }

  /** The pending read settled; false: the connection was finished meanwhile (what came is dropped). */
  private received(c: Conn): boolean {
    c.reading = false;
    clearTimeout(c.timer);
    c.timer = undefined;
    return !c.finished;
  }

  /** Serves one request in order; then the next, or (every FRAMES_PER_TURN) others get a turn first. */
  private frame(c: Conn, msg: FdMessage | null): void {
    if (!msg || c.ended) {
      this.finish(c);
      return;
    }
    serveFrame(this.protocol, c, msg.data).then(
      (go) => {
        if (!go) this.finish(c);
        else if (++c.served % FRAMES_PER_TURN === 0) setImmediate(() => this.next(c));
        else this.next(c);
      },
      (e: unknown) => this.finish(c, e),
    );
  }

  /**
   * Serves the connection no more (once). What its unread replies hold stays in flight until the
   * peer reads them or closes its end, so it stays, counted, until then; then it closes. `failed`:
   * a client closing mid-reply (EPIPE, ECONNRESET), a send that timed out, anything else (logged).
   */
  finish(c: Conn, failed?: unknown): void {
    if (failed !== undefined) closing(failed);
    if (c.finished) return;
    c.finished = true;
    clearTimeout(c.timer);
    c.end();
    new Promise<void>((r) => r(this.protocol.closed?.(c)))
      .catch(closing)
      .then(() => this.linger(c))
      .catch(closing)
      .finally(() => {
        this.forget(c);
        this.conns.delete(c.sock);
        c.sock.close();
      })
      .catch(closing);
  }

  // ---- fds in replies not read yet ------------------------------------------------------------

  /** Charges the identity what the connection's replies hold now (as counted, without asking the kernel). */
  private recharge(c: Conn): void {
    c.account.charge(c.unread.fds);
  }

  /** Asks the kernel what the peer has not read (SIOCOUTQ) and updates the counts. */
  settle(c: Conn): void {
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
  private mayRead(c: Conn): boolean {
    return c.account.unreadFds < UNREAD_FDS_PER_CONNECTION && c.unread.outq < UNREAD_BYTES_PER_CONNECTION;
  }

  /**
   * A request whose reply may carry `want` fds may be served (FdConnection.room): true at once
   * when it fits (no promise, no closure: the usual case), else a wait until it does.
   */
  room(c: Conn, want: number): true | Promise<boolean> {
    if (want === 0) return true;
    this.settle(c);
    if (c.account.roomFor(want)) return true;
    return this.wait(c, () => c.account.roomFor(want), true);
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
  send(sock: FdSocket, bytes: Uint8Array, fds: number[] = [], c?: Conn): Promise<void> {
    const sending = sock.send(bytes, fds);
    if (c) {
      const frame = 4 + bytes.length;
      if (sock.pendingSends === 0) {
        c.unread.sentReply(frame, fds.length);
        this.recharge(c);
        // Refused whole by sendmsg (ETOOMANYREFS: nothing of it is in the kernel): not unread.
        // Only a frame with fds can be (and UnreadReplies.unsent forgets only those).
        const n = fds.length;
        if (n > 0 && sending !== SENT)
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
          return Promise.reject(
            new Error(
              `brokerd holds ${this.connections.heldReplyFds} fds of replies that would block, its limit; closing a connection that does not read`,
            ),
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
    // It went out (or failed) in the call: no timer.
    return sock.pendingSends === 0 ? sending : within(sending, SEND_TIMEOUT_MS, "the reply");
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
