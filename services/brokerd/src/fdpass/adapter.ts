// The fd channel's protocol adapter (proto/vfiobroker/v1/fdchannel.proto): decodes an FdRequest,
// calls the core exactly as rpc/ does (the Broker's calls, grants/fd-batch.ts for what the fd
// channel adds), and encodes the FdReply, handing the granted fd to the transport
// (fdpass/transport.ts). A client sends FdRequest{ticket} and gets the backing fd (SCM_RIGHTS) only
// when the ticket matches its kernel-verified peer; or a grant, a release or a batch of them for
// the session whose token it carries, if it is that session's process. Any other outcome is a reply
// with a status and no fd. Its grant, release and batch also serve the workload protocol
// (fdpass/workload-adapter.ts), which gives them its own session and reply framing (GrantPath).
// It holds no state and decides no quota, policy, event or undo itself.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { closeFd } from "@vfio-broker/native";
import {
  type FdBatch,
  type FdGrant,
  type FdRelease,
  FdReplySchema,
  type FdRequest,
  FdRequestSchema,
  FdStatus,
} from "@vfio-broker/proto";
import type { Broker } from "../broker.js";
import { invalid } from "../errors.js";
import type { Mapping } from "../grants/device-file.js";
import { giveBack, grantBatch, grantForFd, type Outcome, undeliverable } from "../grants/fd-batch.js";
import { reportFdBadRequest } from "../grants/fd-reports.js";
import type { Session } from "../identity/session.js";
import { attributeToPb, backingToPb, createMappingArgsFromPb, protToPb } from "../rpc/convert.js";
import { toStatus } from "../rpc/status.js";
import { checkStrings } from "../rpc/strings.js";
import type { FdConnectionPeer } from "../sessions/fd-connections.js";
import { type FdConnection, type FdProtocol, MAX_REPLY_FDS, sendFailure } from "./transport.js";

/** The largest request frame (a ticket is 32 characters; a full FdBatch about 2.5 KiB). */
export const MAX_REQUEST_BYTES = 3072;
/** Releases + grants in one FdBatch (its reply carries at most one fd per item). */
export const MAX_BATCH_ITEMS = MAX_REPLY_FDS;

const STATUS: Record<string, FdStatus> = {
  unknown: FdStatus.UNKNOWN_TICKET,
  expired: FdStatus.EXPIRED,
  already_used: FdStatus.ALREADY_USED,
  wrong_peer: FdStatus.WRONG_PEER,
  revoked: FdStatus.REVOKED,
  internal: FdStatus.INTERNAL,
};

export type FdReplyInit = MessageInitShape<typeof FdReplySchema>;

const encode = (r: FdReplyInit): Uint8Array => toBinary(FdReplySchema, create(FdReplySchema, r));

/**
 * For whom a grant, release or batch is made and how its reply is framed: the ticket protocol
 * finds the session by the token the request carries and sends FdReply; the workload protocol
 * (fdpass/workload-adapter.ts) has its connection's session and wraps the FdReply.
 */
export interface GrantPath {
  /** The session the request is for (its token, the connection's peer, or the connection's own). */
  session(token: string, peer: FdConnectionPeer, c: FdConnection): Session;
  encode(r: FdReplyInit): Uint8Array;
}

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
export function refused(e: unknown): FdReplyInit {
  const st = toStatus(e);
  return {
    status: FdStatus.REFUSED,
    grpcCode: grpc.status[st.code ?? grpc.status.INTERNAL],
    message: st.details ?? "",
  };
}

/** A batch's items as replies, each refusal encoded once however many items it refused. */
function itemReplies<T>(outcomes: Outcome<T>[], ok: (v: T) => FdReplyInit): FdReplyInit[] {
  const seen = new Map<unknown, FdReplyInit>();
  return outcomes.map((o) => {
    if (o.ok) return ok(o.value);
    let r = seen.get(o.error);
    if (!r) {
      r = refused(o.error);
      seen.set(o.error, r);
    }
    return r;
  });
}

/** Fds a request's reply may carry. */
function fdsWanted(req: FdRequest): number {
  if (req.batch) return Math.min(req.batch.grants.length, MAX_BATCH_ITEMS);
  if (req.release) return 0;
  return 1;
}

export class FdAdapter implements FdProtocol {
  readonly maxRequestBytes = MAX_REQUEST_BYTES;

  /** The ticket protocol's: the session the request's token names, if it is this peer's. */
  private readonly byToken: GrantPath;

  constructor(private readonly broker: Broker) {
    this.byToken = { session: (t, peer) => broker.sessionForFd(t, peer), encode };
  }

  stopped(): boolean {
    return this.broker.frozen;
  }

  busy(message: string): Uint8Array {
    return encode({ status: FdStatus.BUSY, message });
  }

  badFrame(e: Error, peer: FdConnectionPeer): Uint8Array {
    return this.badRequest(
      `bad frame (${e.message.slice(0, 120)}); send a 4-byte big-endian length and at most ${MAX_REQUEST_BYTES} bytes of FdRequest (WorkloadRequest on a workload connection), with no fds`,
      peer,
    );
  }

  /** FD_STATUS_BAD_REQUEST with message, counted as the fd channel counts malformed requests. */
  badRequest(message: string, peer: FdConnectionPeer): Uint8Array {
    reportFdBadRequest(this.broker, peer);
    return encode({ status: FdStatus.BAD_REQUEST, message });
  }

  async serve(c: FdConnection, frame: Uint8Array): Promise<boolean> {
    let req: FdRequest;
    try {
      req = fromBinary(FdRequestSchema, frame);
    } catch {
      await c.reply(
        encode({ status: FdStatus.BAD_REQUEST, message: "the request is not an FdRequest protobuf" }),
      );
      reportFdBadRequest(this.broker, c.peer);
      return true;
    }
    try {
      // Tickets, tokens and request ids within their limits (rpc/strings.ts), before anything else.
      checkStrings(req);
    } catch (e) {
      await c.reply(encode({ status: FdStatus.BAD_REQUEST, message: (e as Error).message }));
      reportFdBadRequest(this.broker, c.peer);
      return true;
    }
    // Its reply's fds must fit in the identity's unreadFds quota: until they do, it waits.
    const room = c.room(fdsWanted(req));
    if (room !== true && !(await room)) return false;
    // Handing over to the next brokerd: wait for it to settle. Done, the state is final, so
    // nothing is delivered here: the client sees the connection close and presents the same
    // ticket to the next brokerd. Aborted, this brokerd serves the request as if nothing happened.
    await this.broker.handover.wait();
    if (this.broker.frozen) return false;
    if (req.batch) await this.batch(c, req.batch, this.byToken);
    else if (req.grant) await this.grant(c, req.grant, this.byToken);
    else if (req.release) await this.release(c, req.release, this.byToken);
    else await this.redeem(c, req.ticket);
    return true;
  }

  /** A ticket from CreateMapping redeemed: its mapping's fd. */
  private async redeem(c: FdConnection, ticket: string): Promise<void> {
    const d = this.broker.redeemTicket(ticket, c.peer);
    if (!d.ok) {
      await c.reply(encode({ status: STATUS[d.status] ?? FdStatus.INTERNAL, message: d.message }));
      return;
    }
    await this.deliver(c, d.mapping, false);
  }

  /**
   * The grant fast path: CreateMapping + delivery in one exchange, for the session the path finds
   * (by the request's token, if this connection's peer is that session's process, or the workload
   * connection's own). The Broker does all the checking and recording exactly as on the gRPC path.
   * Resolves true once answered (the connection goes on), so a protocol can return it as its serve().
   */
  async grant(c: FdConnection, g: FdGrant, path: GrantPath): Promise<boolean> {
    let m: Mapping | undefined;
    try {
      const s = path.session(g.sessionToken, c.peer, c);
      try {
        // Its records are written (with other connections' of this turn: Broker.group) before the
        // reply that depends on them goes out.
        await this.broker.group(() => {
          m = grantForFd(this.broker, s, createMappingArgsFromPb(g), c.peer);
        });
      } catch (e) {
        // Its records did not reach the store: the grant is given back, its fd never sent.
        if (m) giveBack(this.broker, s, m);
        throw e;
      }
    } catch (e) {
      await c.reply(path.encode(refused(e)));
      return true;
    }
    await this.deliver(c, m!, true, path.encode);
    return true;
  }

  /** ReleaseMapping in one exchange, for the session the path finds (as grant()); resolves true. */
  async release(c: FdConnection, r: FdRelease, path: GrantPath): Promise<boolean> {
    const { sessionToken, deviceFileId, cookie } = r;
    try {
      const s = path.session(sessionToken, c.peer, c);
      await this.broker.group(() => this.broker.releaseMapping(s, deviceFileId, cookie), "a release");
    } catch (e) {
      await c.reply(path.encode(refused(e)));
      return true;
    }
    await c.reply(path.encode({ status: FdStatus.OK, cookie }));
    return true;
  }

  /**
   * FdBatch: releases, then grants (grants/fd-batch.ts), answered in one reply that carries the
   * granted fds in item order.
   */
  async batch(c: FdConnection, b: FdBatch, path: GrantPath): Promise<boolean> {
    let s: Session;
    try {
      s = path.session(b.sessionToken, c.peer, c);
      const n = b.releases.length + b.grants.length;
      if (n > MAX_BATCH_ITEMS)
        throw invalid(`a batch holds at most ${MAX_BATCH_ITEMS} items, this one ${n}; split it`, "batch");
    } catch (e) {
      await c.reply(path.encode(refused(e)));
      return true;
    }
    const out = grantBatch(this.broker, s, b, c.peer, { args: createMappingArgsFromPb, view: mappingReply });
    const { fds } = out;
    try {
      const releases = itemReplies(out.releases, (cookie) => ({ status: FdStatus.OK, cookie }));
      const grants = itemReplies(out.grants, (r) => r);
      // reply() has handed the fds to the kernel, or (a client not reading) taken private dups of
      // them, by the time it returns: ours are closed at once, not held for the send's duration.
      const sending = c.reply(path.encode({ status: FdStatus.OK, items: [...releases, ...grants] }), fds);
      const nfds = fds.length;
      for (const fd of fds.splice(0)) closeFd(fd);
      try {
        await sending;
      } catch (e) {
        if (nfds === 0) throw e;
        const no = this.undelivered(e, c.peer, out.granted);
        if (!no) throw e;
        // The same reply without fds: the releases stand, every granted item says why it has none.
        const none = grants.map((i) => (i.status === FdStatus.OK ? no : i));
        await c.reply(path.encode({ status: FdStatus.OK, items: [...releases, ...none] }));
      }
    } finally {
      for (const fd of fds) closeFd(fd);
    }
    return true;
  }

  /**
   * Sends a mapping's fd; brokerd keeps no copy of it afterwards, whatever happens. giveBack: a
   * grant made by this request, released again if the kernel refused its fd (a redeemed ticket's
   * mapping stays: its client releases it, as after any failed fetch).
   */
  private async deliver(c: FdConnection, m: Mapping, giveBack: boolean, enc = encode): Promise<void> {
    try {
      await c.reply(enc(mappingReply(m)), [m.backing.fd]);
    } catch (e) {
      const no = this.undelivered(e, c.peer, giveBack ? [m] : []);
      if (!no) throw e;
      await c.reply(enc(no));
    } finally {
      // Even when the reply failed (the client closed mid-reply, or stopped reading), the fd may
      // have gone out with the first bytes, so the mapping stays booked as delivered until the
      // session releases it or its process exits.
      m.backing.handedOver();
    }
  }

  /**
   * A reply carrying fds failed: the core reports it and, if nothing of it left brokerd (the kernel
   * refused the fds: ETOOMANYREFS), gives back the grants in giveBack; then the
   * FD_STATUS_UNDELIVERABLE reply to send instead is returned; else undefined (the connection is
   * lost, and the caller's error ends it as before).
   */
  private undelivered(e: unknown, peer: FdConnectionPeer, giveBack: Mapping[]): FdReplyInit | undefined {
    const f = sendFailure(e);
    undeliverable(this.broker, f, peer, giveBack);
    if (!f.unsent) return undefined;
    return {
      status: FdStatus.UNDELIVERABLE,
      message: `${f.message}${giveBack.length > 0 ? "; the grant was released" : "; release the mapping"}`,
    };
  }
}
