// The fd channel (docs/design.md §5.4): a Unix stream socket beside the gRPC one. A client sends
// FdRequest{ticket}; brokerd checks the ticket against the kernel-verified peer (SO_PEERCRED) and
// replies with FdReply plus the backing fd (SCM_RIGHTS) only when everything matches. Any other
// outcome is a reply with a status and no fd. The contract (frame size, requests served in order,
// idle close, BUSY) is written down in proto/vfiobroker/v1/fdchannel.proto.
//
// Every client here is untrusted: it may close mid-reply, never read, send garbage or open many
// connections. So each connection is served by one loop that owns it and treats any failure as
// that client's disconnect (never brokerd's), connections are counted per identity (the policy's
// fdConnections quota) and in all, the whole shared fairly among tenants (grants/fair-share.ts),
// and brokerd's copy of a delivered fd is closed at once.
//
// The fds of a reply the client has not read stay in flight in the kernel (one open file each) for
// as long as the client keeps its socket, whatever brokerd does with its end. So they are counted
// (fdpass/unread.ts, from SIOCOUTQ) per connection and per identity (the unreadFds quota): a
// connection whose unread replies hold UNREAD_FDS_PER_CONNECTION fds (or UNREAD_BYTES_PER_CONNECTION
// bytes) is not read from, an identity at its quota gets no request that would add fds served, and
// a connection brokerd is done with is closed only once its replies are read (or its peer left),
// counted all the while. A paused connection is looked at again on a timer: the kernel gives the
// writer no wake-up when the reader takes a few bytes (POLLOUT comes only once three quarters of the
// send buffer are free), so a timer that starts at 1 ms and backs off to 64 ms is what notices an
// honest client that read its replies.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { closeFd, dupFd, FdServer, type FdSocket, frameNotSent, peerCred } from "@vfio-broker/native";
import {
  type FdBatch,
  type FdGrant,
  FdReplySchema,
  type FdRequest,
  FdRequestSchema,
  FdStatus,
} from "@vfio-broker/proto";
import type { Broker, FdPeer } from "../broker.js";
import { BrokerError, invalid } from "../errors.js";
import { HELD_REPLY_FDS, nofileLimit } from "../fd-budget.js";
import type { Mapping } from "../grants/device-file.js";
import { DEFAULT_RESERVE_PERCENT, explainRefusal, FairShare, tenantShare } from "../grants/fair-share.js";
import { quotaKeys } from "../identity/container.js";
import { cgroupOf } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import { describeTenant } from "../identity/subuid.js";
import { logLimited } from "../log.js";
import { limitsFor } from "../policy/index.js";
import { attributeToPb, backingToPb, createMappingArgsFromPb, protToPb } from "../rpc/convert.js";
import { toStatus } from "../rpc/status.js";
import { checkStrings } from "../rpc/strings.js";
import { classifyDeliveryFailure } from "./delivery-failure.js";
import { UnreadReplies } from "./unread.js";

const STATUS: Record<string, FdStatus> = {
  unknown: FdStatus.UNKNOWN_TICKET,
  expired: FdStatus.EXPIRED,
  already_used: FdStatus.ALREADY_USED,
  wrong_peer: FdStatus.WRONG_PEER,
  revoked: FdStatus.REVOKED,
  internal: FdStatus.INTERNAL,
};

/** The largest request frame (a ticket is 32 characters; a full FdBatch about 2.5 KiB). */
export const MAX_REQUEST_BYTES = 3072;
/** Releases + grants in one FdBatch. */
export const MAX_BATCH_ITEMS = 32;
export const DEFAULT_IDLE_MS = 30_000;
export const DEFAULT_MAX_CONNECTIONS = 1024;
/**
 * Refusals answered at once, shared fairly among tenants (half kept for tenants answered nothing
 * yet); more connections over quota are closed without a word.
 */
const MAX_REFUSING = 32;
/** A reply not taken by the client within this long: the client is not reading, drop it. */
const SEND_TIMEOUT_MS = 5000;
/** A connection whose unread replies hold this many fds (one full batch) is not read from. */
export const UNREAD_FDS_PER_CONNECTION = MAX_BATCH_ITEMS;
/** Nor one whose unread replies take this much kernel memory (replies without fds count here). */
export const UNREAD_BYTES_PER_CONNECTION = 64 * 1024;
/** A paused connection is looked at again after 1 ms, then 2, 4, ... up to this (ms). */
const PAUSED_RECHECK_MAX_MS = 64;
/** A connection brokerd is done with, whose replies are unread, is looked at this often at most (ms). */
const LINGER_RECHECK_MAX_MS = 1000;

/** One served connection: its socket, whose it is, and what its replies hold in flight. */
interface Conn {
  sock: FdSocket;
  keys: readonly string[];
  /** The identity's unreadFds quota. */
  limit: number;
  unread: UnreadReplies;
  /** What is charged to the identity's unreadFds now. */
  charged: number;
  /** SIOCOUTQ when last looked at. */
  outq: number;
  /** Private fd dups held for a reply whose send would block. */
  held: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export interface FdChannelOptions {
  path: string;
  mode: number;
  idleMs?: number;
  /** Connections served at once over all identities (each is one fd in brokerd). */
  maxConnections?: number;
  /** Percent of maxConnections kept for tenants below their minimum (grants/fair-share.ts). */
  tenantReservePercent?: number;
  /** Where to bind path: the same name through its verified directory's fd (places.ts). */
  bindPath?: string;
  /** An already listening socket at path (hand-over, fdstore) instead of binding one. */
  listenFd?: number;
}

type FdReplyInit = MessageInitShape<typeof FdReplySchema>;

/** A grant's (or delivery's) reply: where the mapping is, how to mmap the fd that comes with it. */
function mappingReply(m: Mapping): FdReplyInit {
  return {
    status: FdStatus.OK,
    cookie: m.cookie,
    mmapOffset: m.backing.mmapOffset,
    length: m.length,
    prot: protToPb(m.prot),
    effectiveAttribute: attributeToPb(m.effectiveAttribute),
    requestedAttribute: attributeToPb(m.requestedAttribute),
    backing: backingToPb(m.backing.kind),
    regionIndex: m.region.index,
    regionOffset: m.regionOffset,
    fallbackReason: m.fallbackReason,
    refs: m.refs,
  };
}

/** A refused grant or release: the status the gRPC call would have returned (an unexpected error is logged there, too). */
function refused(e: unknown): FdReplyInit {
  const st = toStatus(e);
  return {
    status: FdStatus.REFUSED,
    grpcCode: grpc.status[st.code ?? grpc.status.INTERNAL],
    message: st.details ?? "",
  };
}

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

export class FdChannel {
  private readonly server: FdServer;
  private readonly conns = new Set<FdSocket>();
  /** Open connections, by tenant: brokerd's fd-channel cap shared fairly. */
  readonly shares: FairShare;
  /** Connections being told FD_STATUS_BUSY right now, by tenant. */
  private readonly refusing = new FairShare(MAX_REFUSING, MAX_REFUSING / 2, 1);
  /** Served connections by quota key, to settle an identity's counts across its connections. */
  private readonly byKey = new Map<string, Set<Conn>>();
  private closed = false;

  constructor(
    private readonly broker: Broker,
    private readonly opts: FdChannelOptions,
  ) {
    this.shares = tenantShare(
      opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      opts.tenantReservePercent ?? DEFAULT_RESERVE_PERCENT,
    );
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
    let release: (() => void) | undefined;
    let conn: Conn | undefined;
    try {
      let peer: { uid: number; gid: number; pid: number };
      try {
        peer = peerCred(sock.fd);
      } catch {
        return; // the peer is gone already
      }
      // The tenant's fair share of brokerd's connections first (from the uid alone), then the
      // identity's own quota.
      const tenant = this.broker.tenantOf(peer.uid);
      const v = this.shares.check(tenant.key);
      if (!v.ok) {
        const why = explainRefusal(
          this.shares,
          v,
          describeTenant(peer.uid, tenant),
          "fd-channel connections",
          "reuse one fd-channel connection per process",
        );
        await this.refuse(sock, peer, tenant.key, "limit:global_fd_connections", why);
        return;
      }
      const identity = { ...peer, ...cgroupOf(peer.pid) };
      const keys = quotaKeys(identity);
      try {
        this.broker.quotas.charge(
          keys,
          "fdConnections",
          1,
          limitsFor(this.broker.policy, identity).fdConnections,
          `uid ${peer.uid}`,
        );
      } catch (e) {
        if (!(e instanceof BrokerError)) throw e;
        await this.refuse(sock, peer, tenant.key, e.reason, e.message);
        return;
      }
      this.shares.acquire(tenant.key);
      release = () => {
        this.broker.quotas.refund(keys, "fdConnections", 1);
        this.shares.release(tenant.key);
      };
      this.conns.add(sock);
      conn = {
        sock,
        keys,
        limit: limitsFor(this.broker.policy, identity).unreadFds,
        unread: new UnreadReplies(),
        charged: 0,
        outq: 0,
        held: 0,
      };
      for (const k of keys) {
        const set = this.byKey.get(k) ?? new Set<Conn>();
        this.byKey.set(k, set);
        set.add(conn);
      }
      try {
        await this.serve(conn, peer);
      } catch (e) {
        // A client closing mid-reply (EPIPE, ECONNRESET), a send that timed out, anything else:
        // it ends this connection only.
        logLimited("fd-channel", `brokerd: fd channel: closing a connection: ${(e as Error).message}`);
      }
      // Done with it; but what its unread replies hold stays in flight until the peer reads them
      // or closes its end, so the connection stays, counted, until then.
      await this.linger(conn);
    } catch (e) {
      logLimited("fd-channel", `brokerd: fd channel: closing a connection: ${(e as Error).message}`);
    } finally {
      if (conn) this.forget(conn);
      this.conns.delete(sock);
      release?.();
      sock.close();
    }
  }

  // ---- fds in replies not read yet ------------------------------------------------------------

  /** Charges the identity what the connection's replies hold now (as counted, without asking the kernel). */
  private recharge(c: Conn): void {
    const n = c.unread.fds;
    const d = n - c.charged;
    if (d > 0) this.broker.quotas.restore(c.keys, "unreadFds", d);
    else if (d < 0) this.broker.quotas.refund(c.keys, "unreadFds", -d);
    this.broker.fdReplies.unreadFds += d;
    c.charged = n;
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

  /** The identity's unread fds (the most over its quota keys). */
  private identityUnread(c: Conn): number {
    let n = 0;
    for (const k of c.keys) n = Math.max(n, this.broker.quotas.usage(k).unreadFds);
    return n;
  }

  /** Settles every connection that shares a quota key with c (their counts may be stale). */
  private settleIdentity(c: Conn): void {
    const seen = new Set<Conn>();
    for (const k of c.keys)
      for (const o of this.byKey.get(k) ?? [])
        if (!seen.has(o)) {
          seen.add(o);
          this.settle(o);
        }
  }

  /**
   * Waits until ok() holds (false if brokerd closes or freezes meanwhile), looking at the kernel's
   * counts again on a backing-off timer. While it waits the connection is not read from.
   */
  private async until(c: Conn, ok: () => boolean, identityWide: boolean): Promise<boolean> {
    this.settle(c);
    if (ok()) return true;
    let paused = false;
    let delay = 1;
    try {
      for (;;) {
        if (identityWide) this.settleIdentity(c);
        if (ok()) return true;
        if (this.closed || this.broker.frozen) return false;
        if (!paused) {
          paused = true;
          this.broker.fdReplies.pausedConnections++;
        }
        await sleep(delay);
        delay = Math.min(delay * 2, PAUSED_RECHECK_MAX_MS);
        this.settle(c);
      }
    } finally {
      if (paused) this.broker.fdReplies.pausedConnections--;
    }
  }

  /** The connection may be read from: its own unread replies are under a batch's worth. */
  private readable(c: Conn): Promise<boolean> {
    return this.until(
      c,
      () => c.charged < UNREAD_FDS_PER_CONNECTION && c.outq < UNREAD_BYTES_PER_CONNECTION,
      false,
    );
  }

  /**
   * A request whose reply may carry `want` fds may be served: the identity's unread fds stay within
   * its unreadFds quota (or it has none unread at all, so one batch always gets through).
   */
  private admit(c: Conn, want: number): Promise<boolean> {
    if (want === 0) return Promise.resolve(true);
    return this.until(
      c,
      () => {
        const u = this.identityUnread(c);
        return u === 0 || u + want <= c.limit;
      },
      true,
    );
  }

  /** Keeps a connection brokerd is done with until its replies are read or its peer left. */
  private async linger(c: Conn): Promise<void> {
    // A reply still waiting in brokerd goes no further: its fds are closed here.
    c.sock.dropUnsent();
    this.settle(c);
    let delay = 10;
    while (c.charged > 0 && !this.closed) {
      await sleep(delay);
      delay = Math.min(delay * 2, LINGER_RECHECK_MAX_MS);
      this.settle(c);
    }
  }

  /** The connection is closing: nothing of it is counted any more. */
  private forget(c: Conn): void {
    c.sock.dropUnsent();
    c.unread.hold(-c.unread.fds);
    c.unread.settle(0);
    this.recharge(c);
    for (const k of c.keys) {
      const set = this.byKey.get(k);
      set?.delete(c);
      if (set?.size === 0) this.byKey.delete(k);
    }
  }

  /** Fds a request's reply may carry. */
  private static fdsWanted(req: FdRequest): number {
    if (req.batch) return Math.min(req.batch.grants.length, MAX_BATCH_ITEMS);
    if (req.release) return 0;
    return 1;
  }

  private async refuse(
    sock: FdSocket,
    peer: { uid: number; pid: number },
    tenant: string,
    reason: string,
    message: string,
  ): Promise<void> {
    this.broker.emit("connection.refused", "fd", { uid: peer.uid, pid: peer.pid }, reason);
    this.broker.emit("fd.delivery", "refused_busy", undefined, 0, { uid: peer.uid, pid: peer.pid });
    // Refusals in flight hold an fd each too; a client reconnecting in a tight loop must not turn
    // them into an unbounded number: past its tenant's share of a few, a refused connection is
    // just closed.
    if (!this.refusing.acquire(tenant).ok) return;
    try {
      await this.reply(sock, { status: FdStatus.BUSY, message }).catch(() => {});
    } finally {
      this.refusing.release(tenant);
    }
  }

  /**
   * Sends one reply; on a served connection its bytes and fds are counted as unread from the moment
   * they are in the kernel, and as held while brokerd keeps them because the send would block (at
   * most HELD_REPLY_FDS such fds in all; past that the reply is taken back, its fds closed, and the
   * connection is served no more).
   */
  private async reply(
    sock: FdSocket,
    r: MessageInitShape<typeof FdReplySchema>,
    fds: number[] = [],
    c?: Conn,
  ): Promise<void> {
    const bytes = toBinary(FdReplySchema, create(FdReplySchema, r));
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
        if (this.broker.fdReplies.heldFds + held > HELD_REPLY_FDS) {
          // Taken back before any of it went out (its dups closed); the connection is served no
          // more, and lingers, counted, while its earlier replies are unread.
          sending.catch(() => {});
          sock.dropUnsent();
          throw new Error(
            `brokerd holds ${this.broker.fdReplies.heldFds} fds of replies that would block, its limit; closing a connection that does not read`,
          );
        }
        c.held = held;
        this.broker.fdReplies.heldFds += held;
        c.unread.hold(fds.length);
        this.recharge(c);
        sending
          .then(() => c.unread.sentReply(frame, fds.length))
          .catch(() => {})
          .finally(() => {
            c.unread.hold(-fds.length);
            this.broker.fdReplies.heldFds -= c.held;
            c.held = 0;
            this.recharge(c);
          });
      }
    }
    await within(sending, SEND_TIMEOUT_MS, "the reply");
  }

  private async serve(c: Conn, peer: { uid: number; pid: number }): Promise<void> {
    const { sock } = c;
    const idleMs = this.opts.idleMs ?? DEFAULT_IDLE_MS;
    for (;;) {
      // Not read from while its unread replies hold a batch's worth (the peer reads, or leaves).
      if (!(await this.readable(c))) return;
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), idleMs);
      });
      let msg: Awaited<ReturnType<FdSocket["recv"]>>;
      try {
        msg = await Promise.race([
          sock.recv({ maxBytes: MAX_REQUEST_BYTES, maxFds: 0, keepOpenOnError: true }),
          idle,
        ]);
      } catch (e) {
        // A frame over the limit, fds sent to us, a frame cut by EOF: the stream position is lost.
        // Say so, then close (the socket stays open for this one reply).
        this.broker.emit("fd.delivery", "bad_request", undefined, 0, peer);
        await this.reply(sock, {
          status: FdStatus.BAD_REQUEST,
          message: `bad frame (${(e as Error).message.slice(0, 120)}); send a 4-byte big-endian length and at most ${MAX_REQUEST_BYTES} bytes of FdRequest, with no fds`,
        }).catch(() => {});
        return;
      } finally {
        clearTimeout(timer);
      }
      if (!msg) return;
      let req: FdRequest;
      try {
        req = fromBinary(FdRequestSchema, msg.data);
      } catch {
        await this.reply(
          sock,
          { status: FdStatus.BAD_REQUEST, message: "the request is not an FdRequest protobuf" },
          [],
          c,
        );
        this.broker.emit("fd.delivery", "bad_request", undefined, 0, peer);
        continue;
      }
      try {
        // Tickets, tokens and request ids within their limits (rpc/strings.ts), before anything else.
        checkStrings(req);
      } catch (e) {
        await this.reply(sock, { status: FdStatus.BAD_REQUEST, message: (e as Error).message }, [], c);
        this.broker.emit("fd.delivery", "bad_request", undefined, 0, peer);
        continue;
      }
      // Its reply's fds must fit in the identity's unreadFds quota: until they do, it waits.
      if (!(await this.admit(c, FdChannel.fdsWanted(req)))) return;
      // Handing over to the next brokerd: wait for it to settle. Done, the state is final, so
      // nothing is delivered here: the client sees the connection close and presents the same
      // ticket to the next brokerd. Aborted, this brokerd serves the request as if nothing happened.
      await this.broker.handover.wait();
      if (this.broker.frozen) return;
      if (req.batch) {
        await this.batch(c, req.batch, peer);
        continue;
      }
      if (req.grant || req.release) {
        await this.fastPath(c, req, peer);
        continue;
      }
      const ticket = req.ticket;
      const d = this.broker.redeemTicket(ticket, peer);
      if (!d.ok) {
        await this.reply(sock, { status: STATUS[d.status] ?? FdStatus.INTERNAL, message: d.message }, [], c);
        continue;
      }
      await this.deliver(c, d.mapping, peer, false);
    }
  }

  /**
   * The grant fast path: CreateMapping + delivery in one exchange (or ReleaseMapping), for the
   * session whose token the request carries, if this connection's peer is that session's process.
   * The Broker does all the checking and recording exactly as on the gRPC path.
   */
  private async fastPath(c: Conn, req: FdRequest, peer: FdPeer): Promise<void> {
    let m: Mapping;
    try {
      if (req.release) {
        const s = this.broker.sessionForFd(req.release.sessionToken, peer);
        this.broker.releaseMapping(s, req.release.deviceFileId, req.release.cookie);
        await this.reply(c.sock, { status: FdStatus.OK, cookie: req.release.cookie }, [], c);
        return;
      }
      const g = req.grant!;
      m = this.grantOne(this.broker.sessionForFd(g.sessionToken, peer), g, peer);
    } catch (e) {
      await this.reply(c.sock, refused(e), [], c);
      return;
    }
    await this.deliver(c, m, peer, true);
  }

  /** One grant for s, its fd ready to go to peer (created delivered, or a ticket redeemed). */
  private grantOne(s: Session, g: FdGrant, peer: FdPeer): Mapping {
    const r = this.broker.createMapping(s, createMappingArgsFromPb(g), peer);
    if (r.delivered) return r.mapping;
    if (r.ticket === "") return this.broker.redeliver(s, r.mapping);
    const d = this.broker.redeemTicket(r.ticket, peer);
    if (!d.ok) throw new BrokerError("INTERNAL", d.message, "fd_grant");
    return d.mapping;
  }

  /**
   * FdBatch: releases, then grants, each done on its own as the single request would be, answered
   * in one reply that carries the granted fds in item order. Each fd is dup'ed as soon as its item
   * is granted, so a later item of the same batch (another reference on the same cookie, which
   * gets a fresh backing) cannot close one that is still to be sent.
   */
  private async batch(c: Conn, b: FdBatch, peer: FdPeer): Promise<void> {
    const { sock } = c;
    let s: Session;
    try {
      s = this.broker.sessionForFd(b.sessionToken, peer);
      const n = b.releases.length + b.grants.length;
      if (n > MAX_BATCH_ITEMS)
        throw invalid(`a batch holds at most ${MAX_BATCH_ITEMS} items, this one ${n}; split it`, "batch");
    } catch (e) {
      await this.reply(sock, refused(e), [], c);
      return;
    }
    let items: FdReplyInit[] = [];
    const fds: number[] = [];
    const granted: Mapping[] = [];
    try {
      try {
        // Every record and journal line of the batch in one write each, before the reply.
        this.broker.batch(() => {
          for (const r of b.releases)
            try {
              this.broker.releaseMapping(s, r.deviceFileId, r.cookie);
              items.push({ status: FdStatus.OK, cookie: r.cookie });
            } catch (e) {
              items.push(refused(e));
            }
          for (const g of b.grants) {
            let m: Mapping;
            try {
              m = this.grantOne(s, g, peer);
            } catch (e) {
              items.push(refused(e));
              continue;
            }
            granted.push(m);
            try {
              fds.push(dupFd(m.backing.fd));
            } finally {
              // brokerd keeps no copy of a delivered fd (the dup above goes out with the reply).
              m.backing.handedOver();
            }
            items.push(mappingReply(m));
          }
        });
      } catch (e) {
        // The records did not reach the store: nothing of this batch may be relied on. Its grants
        // are given back (their fds never go out); its releases stand (they are done in memory).
        for (const m of granted)
          try {
            this.broker.releaseMapping(s, m.deviceFile.id, m.cookie);
          } catch {
            // already gone (revoked meanwhile): nothing to give back
          }
        for (const fd of fds.splice(0)) closeFd(fd);
        const no = refused(e);
        items = [...items.slice(0, b.releases.length), ...b.grants.map(() => no)];
      }
      // send() has handed the fds to the kernel, or (a client not reading) taken private dups of
      // them, by the time it returns: ours are closed at once, not held for the send's duration.
      const sending = this.reply(sock, { status: FdStatus.OK, items }, fds, c);
      const nfds = fds.length;
      for (const fd of fds.splice(0)) closeFd(fd);
      try {
        await sending;
      } catch (e) {
        if (nfds === 0) throw e;
        const no = this.undelivered(e, peer, granted);
        if (!no) throw e;
        // The same reply without fds: the releases stand, every granted item says why it has none.
        const grants = items.slice(b.releases.length).map((i) => (i.status === FdStatus.OK ? no : i));
        await this.reply(
          sock,
          { status: FdStatus.OK, items: [...items.slice(0, b.releases.length), ...grants] },
          [],
          c,
        );
      }
    } finally {
      for (const fd of fds) closeFd(fd);
    }
  }

  /**
   * Sends a mapping's fd; brokerd keeps no copy of it afterwards, whatever happens. giveBack: a
   * grant made by this request, released again if the kernel refused its fd (a redeemed ticket's
   * mapping stays: its client releases it, as after any failed fetch).
   */
  private async deliver(c: Conn, m: Mapping, peer: FdPeer, giveBack: boolean): Promise<void> {
    try {
      await this.reply(c.sock, mappingReply(m), [m.backing.fd], c);
    } catch (e) {
      const no = this.undelivered(e, peer, giveBack ? [m] : []);
      if (!no) throw e;
      await this.reply(c.sock, no, [], c);
    } finally {
      // Even when the reply failed (the client closed mid-reply, or stopped reading), the fd may
      // have gone out with the first bytes, so the mapping stays booked as delivered until the
      // session releases it or its process exits.
      m.backing.handedOver();
    }
  }

  /**
   * A reply carrying fds failed: counted by errno and said on stderr. If nothing of it left brokerd
   * (the kernel refused the fds: ETOOMANYREFS), the grants in giveBack are released and the
   * FD_STATUS_UNDELIVERABLE reply to send instead is returned; else undefined (the connection is
   * lost, and the caller's error ends it as before).
   */
  private undelivered(e: unknown, peer: FdPeer, giveBack: Mapping[]): FdReplyInit | undefined {
    const f = classifyDeliveryFailure(e, frameNotSent(e), {
      uid: process.geteuid?.() ?? 0,
      nofile: nofileLimit(),
    });
    this.broker.emit("fd.undeliverable", f.errno, { uid: peer.uid, pid: peer.pid });
    logLimited(
      "fd-undeliverable",
      `vfio-brokerd: fd channel: ${f.message} (peer uid ${peer.uid} pid ${peer.pid})`,
    );
    if (!f.unsent) return undefined;
    for (const m of giveBack) {
      const s = this.broker.sessions.get(m.deviceFile.sessionId);
      try {
        if (s) this.broker.releaseMapping(s, m.deviceFile.id, m.cookie, "undeliverable");
      } catch {
        // already gone (revoked meanwhile): nothing to give back
      }
    }
    return {
      status: FdStatus.UNDELIVERABLE,
      message: `${f.message}${giveBack.length > 0 ? "; the grant was released" : "; release the mapping"}`,
    };
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
  get connections(): number {
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
