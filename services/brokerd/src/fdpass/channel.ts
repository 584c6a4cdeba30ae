// The fd channel (DESIGN.md §2 step 4): a Unix stream socket beside the gRPC one. A client sends
// FdRequest{ticket}; brokerd checks the ticket against the kernel-verified peer (SO_PEERCRED) and
// replies with FdReply plus the backing fd (SCM_RIGHTS) only when everything matches. Any other
// outcome is a reply with a status and no fd. The contract (frame size, requests served in order,
// idle close, BUSY) is written down in proto/vfiobroker/v1/fdchannel.proto.
//
// Every client here is untrusted: it may close mid-reply, never read, send garbage or open many
// connections. So each connection is served by one loop that owns it and treats any failure as
// that client's disconnect (never brokerd's), connections are counted per identity (the policy's
// fdConnections quota) and in all, and brokerd's copy of a delivered fd is closed at once.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { closeFd, dupFd, FdServer, type FdSocket, peerCred } from "@vfio-broker/native";
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
import type { Mapping } from "../grants/device-file.js";
import { quotaKeys } from "../identity/container.js";
import { cgroupOf } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import { logLimited } from "../log.js";
import { limitsFor } from "../policy/index.js";
import { attributeToPb, backingToPb, createMappingArgsFromPb, protToPb } from "../rpc/convert.js";
import { toStatus } from "../rpc/status.js";

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
/** Refusals answered at once; more connections over quota are closed without a word. */
const MAX_REFUSING = 32;
/** A reply not taken by the client within this long: the client is not reading, drop it. */
const SEND_TIMEOUT_MS = 5000;

export interface FdChannelOptions {
  path: string;
  mode: number;
  idleMs?: number;
  /** Connections served at once over all identities (each is one fd in brokerd). */
  maxConnections?: number;
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
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export class FdChannel {
  private readonly server: FdServer;
  private readonly conns = new Set<FdSocket>();
  /** Connections being told FD_STATUS_BUSY right now. */
  private refusing = 0;

  constructor(
    private readonly broker: Broker,
    private readonly opts: FdChannelOptions,
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
    let release: (() => void) | undefined;
    try {
      let peer: { uid: number; gid: number; pid: number };
      try {
        peer = peerCred(sock.fd);
      } catch {
        return; // the peer is gone already
      }
      const max = this.opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
      if (this.conns.size >= max) {
        await this.refuse(
          sock,
          peer,
          "limit:global_fd_connections",
          `brokerd serves ${max} fd-channel connections, its global limit; try again shortly`,
        );
        return;
      }
      const identity = { ...peer, cgroup: cgroupOf(peer.pid) };
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
        await this.refuse(sock, peer, e.reason, e.message);
        return;
      }
      release = () => this.broker.quotas.refund(keys, "fdConnections", 1);
      this.conns.add(sock);
      await this.serve(sock, peer);
    } catch (e) {
      // A client closing mid-reply (EPIPE, ECONNRESET), a send that timed out, anything else:
      // it ends this connection only.
      logLimited("fd-channel", `brokerd: fd channel: closing a connection: ${(e as Error).message}`);
    } finally {
      this.conns.delete(sock);
      release?.();
      sock.close();
    }
  }

  private async refuse(
    sock: FdSocket,
    peer: { uid: number; pid: number },
    reason: string,
    message: string,
  ): Promise<void> {
    this.broker.emit("connection.refused", "fd", { uid: peer.uid, pid: peer.pid }, reason);
    this.broker.emit("fd.delivery", "refused_busy", undefined, 0, { uid: peer.uid, pid: peer.pid });
    // Refusals in flight hold an fd each too; a client reconnecting in a tight loop must not turn
    // them into an unbounded number: past a few, a refused connection is just closed.
    if (this.refusing >= MAX_REFUSING) return;
    this.refusing++;
    try {
      await this.reply(sock, { status: FdStatus.BUSY, message }).catch(() => {});
    } finally {
      this.refusing--;
    }
  }

  private async reply(
    sock: FdSocket,
    r: MessageInitShape<typeof FdReplySchema>,
    fds: number[] = [],
  ): Promise<void> {
    await within(
      sock.send(toBinary(FdReplySchema, create(FdReplySchema, r)), fds),
      SEND_TIMEOUT_MS,
      "the reply",
    );
  }

  private async serve(sock: FdSocket, peer: { uid: number; pid: number }): Promise<void> {
    const idleMs = this.opts.idleMs ?? DEFAULT_IDLE_MS;
    for (;;) {
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
        await this.reply(sock, {
          status: FdStatus.BAD_REQUEST,
          message: "the request is not an FdRequest protobuf",
        });
        this.broker.emit("fd.delivery", "bad_request", undefined, 0, peer);
        continue;
      }
      // Handing over to the next brokerd: the state is final, so nothing is delivered here. The
      // client sees the connection close and presents the same ticket to the next brokerd.
      if (this.broker.frozen) return;
      if (req.batch) {
        await this.batch(sock, req.batch, peer);
        continue;
      }
      if (req.grant || req.release) {
        await this.fastPath(sock, req, peer);
        continue;
      }
      const ticket = req.ticket;
      const d = this.broker.redeemTicket(ticket, peer);
      if (!d.ok) {
        await this.reply(sock, { status: STATUS[d.status] ?? FdStatus.INTERNAL, message: d.message });
        continue;
      }
      await this.deliver(sock, d.mapping);
    }
  }

  /**
   * The grant fast path: CreateMapping + delivery in one exchange (or ReleaseMapping), for the
   * session whose token the request carries, if this connection's peer is that session's process.
   * The Broker does all the checking and recording exactly as on the gRPC path.
   */
  private async fastPath(sock: FdSocket, req: FdRequest, peer: FdPeer): Promise<void> {
    let m: Mapping;
    try {
      if (req.release) {
        const s = this.broker.sessionForFd(req.release.sessionToken, peer);
        this.broker.releaseMapping(s, req.release.deviceFileId, req.release.cookie);
        await this.reply(sock, { status: FdStatus.OK, cookie: req.release.cookie });
        return;
      }
      const g = req.grant!;
      m = this.grantOne(this.broker.sessionForFd(g.sessionToken, peer), g, peer);
    } catch (e) {
      await this.reply(sock, refused(e));
      return;
    }
    await this.deliver(sock, m);
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
  private async batch(sock: FdSocket, b: FdBatch, peer: FdPeer): Promise<void> {
    let s: Session;
    try {
      s = this.broker.sessionForFd(b.sessionToken, peer);
      const n = b.releases.length + b.grants.length;
      if (n > MAX_BATCH_ITEMS)
        throw invalid(`a batch holds at most ${MAX_BATCH_ITEMS} items, this one ${n}; split it`, "batch");
    } catch (e) {
      await this.reply(sock, refused(e));
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
      const sending = this.reply(sock, { status: FdStatus.OK, items }, fds);
      for (const fd of fds.splice(0)) closeFd(fd);
      await sending;
    } finally {
      for (const fd of fds) closeFd(fd);
    }
  }

  /** Sends a mapping's fd; brokerd keeps no copy of it afterwards, whatever happens. */
  private async deliver(sock: FdSocket, m: Mapping): Promise<void> {
    try {
      await this.reply(sock, mappingReply(m), [m.backing.fd]);
    } finally {
      // Even when the reply failed (the client closed mid-reply, or stopped reading), the fd may
      // have gone out with the first bytes, so the mapping stays booked as delivered until the
      // session releases it or its process exits.
      m.backing.handedOver();
    }
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
    this.server.close(opts);
    for (const c of this.conns) c.close();
  }
}
