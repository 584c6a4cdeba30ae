// The fd channel (DESIGN.md §2 step 4): a Unix stream socket beside the gRPC one. A client sends
// FdRequest{ticket}; brokerd checks the ticket against the kernel-verified peer (SO_PEERCRED) and
// replies with FdReply plus the backing fd (SCM_RIGHTS) only when everything matches. Any other
// outcome is a reply with a status and no fd. The contract (frame size, one request at a time,
// idle close, BUSY) is written down in proto/vfiobroker/v1/fdchannel.proto.
//
// Every client here is untrusted: it may close mid-reply, never read, send garbage or open many
// connections. So each connection is served by one loop that owns it and treats any failure as
// that client's disconnect (never brokerd's), connections are counted per identity (the policy's
// fdConnections quota) and in all, and brokerd's copy of a delivered fd is closed at once.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { FdServer, type FdSocket, peerCred } from "@vfio-broker/native";
import { FdReplySchema, type FdRequest, FdRequestSchema, FdStatus } from "@vfio-broker/proto";
import type { Broker } from "../broker.js";
import { BrokerError } from "../errors.js";
import type { Mapping } from "../grants/device-file.js";
import { quotaKeys } from "../identity/container.js";
import { cgroupOf } from "../identity/peer.js";
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

/** The largest request frame (an FdRequest is a 32-character ticket). */
export const MAX_REQUEST_BYTES = 1024;
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
  /** An already listening socket at path (hand-over, fdstore) instead of binding one. */
  listenFd?: number;
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
        ? FdServer.adopt(opts.path, opts.listenFd)
        : FdServer.listen(opts.path, { mode: opts.mode });
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
  private async fastPath(sock: FdSocket, req: FdRequest, peer: { uid: number; pid: number }): Promise<void> {
    let m: Mapping;
    try {
      if (req.release) {
        const s = this.broker.sessionForFd(req.release.sessionToken, peer);
        this.broker.releaseMapping(s, req.release.deviceFileId, req.release.cookie);
        await this.reply(sock, { status: FdStatus.OK, cookie: req.release.cookie });
        return;
      }
      const g = req.grant!;
      const s = this.broker.sessionForFd(g.sessionToken, peer);
      const r = this.broker.createMapping(s, createMappingArgsFromPb(g), peer);
      if (r.delivered) m = r.mapping;
      else if (r.ticket === "") m = this.broker.redeliver(s, r.mapping);
      else {
        const d = this.broker.redeemTicket(r.ticket, peer);
        if (!d.ok) throw new BrokerError("INTERNAL", d.message, "fd_grant");
        m = d.mapping;
      }
    } catch (e) {
      // The status the gRPC call would have returned (an unexpected error is logged there, too).
      const st = toStatus(e);
      await this.reply(sock, {
        status: FdStatus.REFUSED,
        grpcCode: grpc.status[st.code ?? grpc.status.INTERNAL],
        message: st.details ?? "",
      });
      return;
    }
    await this.deliver(sock, m);
  }

  /** Sends a mapping's fd; brokerd keeps no copy of it afterwards, whatever happens. */
  private async deliver(sock: FdSocket, m: Mapping): Promise<void> {
    try {
      await this.reply(
        sock,
        {
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
        },
        [m.backing.fd],
      );
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
