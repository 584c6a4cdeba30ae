// The fd channel (DESIGN.md §2 step 4): a Unix stream socket beside the gRPC one. A client sends
// FdRequest{ticket}; brokerd checks the ticket against the kernel-verified peer (SO_PEERCRED) and
// replies with FdReply plus the backing fd (SCM_RIGHTS) only when everything matches. Any other
// outcome is a reply with a status and no fd. The connection may carry several requests; idle
// connections are closed after idleMs, and at most maxConnections are served at once.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FdServer, type FdSocket, peerCred } from "@vfio-broker/native";
import { FdReplySchema, FdRequestSchema, FdStatus } from "@vfio-broker/proto";
import type { Broker } from "../broker.js";
import { attributeToPb, backingToPb, protToPb } from "../rpc/convert.js";

const STATUS: Record<string, FdStatus> = {
  unknown: FdStatus.UNKNOWN_TICKET,
  expired: FdStatus.EXPIRED,
  already_used: FdStatus.ALREADY_USED,
  wrong_peer: FdStatus.WRONG_PEER,
  revoked: FdStatus.REVOKED,
  internal: FdStatus.INTERNAL,
};

export interface FdChannelOptions {
  path: string;
  mode: number;
  idleMs?: number;
  maxConnections?: number;
}

export class FdChannel {
  private readonly server: FdServer;
  private readonly conns = new Set<FdSocket>();

  constructor(
    private readonly broker: Broker,
    private readonly opts: FdChannelOptions,
  ) {
    this.server = FdServer.listen(opts.path, { mode: opts.mode });
    this.server.onConnection((sock) => {
      if (this.conns.size >= (opts.maxConnections ?? 1024)) {
        sock.close();
        this.broker.emit("fd.delivery", "refused_busy", undefined, 0, undefined);
        return;
      }
      this.conns.add(sock);
      void this.serve(sock).finally(() => {
        this.conns.delete(sock);
        sock.close();
      });
    });
  }

  private async reply(
    sock: FdSocket,
    r: MessageInitShape<typeof FdReplySchema>,
    fds: number[] = [],
  ): Promise<void> {
    await sock.send(toBinary(FdReplySchema, create(FdReplySchema, r)), fds);
  }

  private async serve(sock: FdSocket): Promise<void> {
    const peer = peerCred(sock.fd);
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), this.opts.idleMs ?? 30_000);
      });
      let msg: Awaited<ReturnType<FdSocket["recv"]>>;
      try {
        msg = await Promise.race([sock.recv({ maxBytes: 1024, maxFds: 0 }), idle]);
      } catch {
        // A malformed frame or a client sending fds to us: the socket is unusable, close it.
        this.broker.emit("fd.delivery", "bad_request", undefined, 0, peer);
        return;
      } finally {
        clearTimeout(timer);
      }
      if (!msg) return;
      let ticket: string;
      try {
        ticket = fromBinary(FdRequestSchema, msg.data).ticket;
      } catch {
        await this.reply(sock, {
          status: FdStatus.BAD_REQUEST,
          message: "the request is not an FdRequest protobuf",
        });
        this.broker.emit("fd.delivery", "bad_request", undefined, 0, peer);
        continue;
      }
      const d = this.broker.redeemTicket(ticket, peer);
      if (!d.ok) {
        await this.reply(sock, { status: STATUS[d.status] ?? FdStatus.INTERNAL, message: d.message });
        continue;
      }
      const m = d.mapping;
      await this.reply(
        sock,
        {
          status: FdStatus.OK,
          cookie: m.cookie,
          mmapOffset: m.backing.mmapOffset,
          length: m.length,
          prot: protToPb(m.prot),
          effectiveAttribute: attributeToPb(m.effectiveAttribute),
          backing: backingToPb(m.backing.kind),
        },
        [m.backing.fd],
      );
    }
  }

  close(): void {
    this.server.close();
    for (const c of this.conns) c.close();
  }
}
