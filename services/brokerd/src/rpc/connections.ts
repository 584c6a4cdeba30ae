// connections.ts: owns the table of one served socket's connections: the context each was admitted
// with (a Session on broker.sock, the peer's identity on admin.sock) under the unique key
// rpc/server.ts gives its socket (the remoteAddress grpc-js reports as a call's getPeer()), each
// one's peer (for the HTTP/2 session watch), and the refused ones lingering to say why. It exists
// before the socket is served, so the services and the Broker are given its lookups when they are
// built. It never decides whether a connection is admitted or refused (rpc/server.ts does).
import type { Socket } from "node:net";
import { BrokerError } from "../errors.js";

type Call = { getPeer(): string };
export type Peer = { uid: number; pid: number };

/** After a session's last lease event is flushed, how long before its socket is closed. */
const CLOSE_AFTER_FLUSH_MS = 20;
/** How long a refused connection is kept to answer its calls with the reason. */
export const REFUSED_LINGER_MS = 2000;

let connCounter = 0;

export class Connections<C> {
  private readonly contexts = new Map<string, C>();
  /** Refused connections kept to answer every call with the reason, by key. */
  private readonly refused = new Map<string, BrokerError>();
  private readonly sockets = new Map<C, Socket>();
  /** Every connection handed to grpc-js, by its key: whose it is, for the HTTP/2 session watch. */
  readonly peers = new Map<string, Peer>();
  /** Set while brokerd drops every connection to hand its state on: no `closed` callbacks then. */
  dropping = false;

  /** The context of the call's connection; throws the reason a refused connection was given. */
  contextOf(call: Call): C {
    const why = this.refused.get(call.getPeer());
    if (why) throw why;
    const ctx = this.contexts.get(call.getPeer());
    if (ctx === undefined)
      throw new BrokerError("UNAUTHENTICATED", "this call's connection has no verified identity");
    return ctx;
  }

  /** The call's connection has another context from now on (a resumed session). */
  rebind(call: Call, ctx: C): void {
    const key = call.getPeer();
    const old = this.contexts.get(key);
    if (old === undefined)
      throw new BrokerError("UNAUTHENTICATED", "this call's connection has no verified identity");
    const socket = this.sockets.get(old)!;
    this.sockets.delete(old);
    this.contexts.set(key, ctx);
    this.sockets.set(ctx, socket);
  }

  /** Closes ctx's connection once `flushed` settles (its last lease event is out), bounded. */
  closeAfter(ctx: C, flushed: Promise<void>): void {
    const socket = this.sockets.get(ctx);
    if (!socket) return;
    const close = () => setTimeout(() => socket.destroy(), CLOSE_AFTER_FLUSH_MS).unref();
    flushed.then(close, close);
  }

  /** Keeps a refused connection for REFUSED_LINGER_MS to answer its calls with `e`. */
  lingerRefused(socket: Socket, peer: Peer, e: BrokerError, release: () => void): void {
    const key = `vfio-broker-refused-${++connCounter}`;
    Object.defineProperty(socket, "remoteAddress", { value: key, configurable: true });
    this.refused.set(key, e);
    this.peers.set(key, peer);
    const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
    socket.on("close", () => {
      clearTimeout(timer);
      this.refused.delete(key);
      this.peers.delete(key);
      release();
    });
  }

  /** An admitted connection with context ctx; `closed` is called when it closes (unless dropping). */
  admitted(socket: Socket, peer: Peer, ctx: C, closed: (ctx: C) => void): void {
    const key = `vfio-broker-conn-${++connCounter}`;
    Object.defineProperty(socket, "remoteAddress", { value: key, configurable: true });
    this.contexts.set(key, ctx);
    this.sockets.set(ctx, socket);
    this.peers.set(key, peer);
    socket.on("close", () => {
      this.peers.delete(key);
      // The context may have changed since accept (rebind: a resumed session).
      const cur = this.contexts.get(key);
      this.contexts.delete(key);
      if (cur === undefined || this.dropping) return;
      this.sockets.delete(cur);
      closed(cur);
    });
  }

  /** Closes every admitted connection now. */
  destroyAll(): void {
    for (const s of this.sockets.values()) s.destroy();
  }
}
