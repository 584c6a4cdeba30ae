// connections.ts: owns the table of one served socket's connections: the context each was admitted
// with (a Session on broker.sock, the peer's identity on admin.sock) under the unique key
// rpc/server.ts gives its socket (the remoteAddress grpc-js reports as a call's getPeer()), and the
// refused ones lingering to say why. It exists before the socket is served, so the services and the
// Broker are given its lookups when they are built. It never accepts, admits or refuses a connection
// (rpc/server.ts does) and never decides when one closes.
import type { Socket } from "node:net";
import { BrokerError } from "../errors.js";

type Call = { getPeer(): string };

/** After a session's last lease event is flushed, how long before its socket is closed. */
const CLOSE_AFTER_FLUSH_MS = 20;

export class Connections<C> {
  private readonly contexts = new Map<string, C>();
  private readonly refused = new Map<string, BrokerError>();
  private readonly sockets = new Map<C, Socket>();

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

  /** A connection admitted with ctx under key (rpc/server.ts). */
  admitted(key: string, ctx: C, socket: Socket): void {
    this.contexts.set(key, ctx);
    this.sockets.set(ctx, socket);
  }

  /** The connection under key closed: its context, if it had one (it may have changed since accept). */
  closed(key: string): C | undefined {
    const cur = this.contexts.get(key);
    this.contexts.delete(key);
    return cur;
  }

  /** ctx's connection is gone. */
  forget(ctx: C): void {
    this.sockets.delete(ctx);
  }

  /** A refused connection lingers under key, answering every call with why (until forgiven). */
  refuse(key: string, why: BrokerError): void {
    this.refused.set(key, why);
  }

  /** The refused connection under key is gone. */
  forgive(key: string): void {
    this.refused.delete(key);
  }

  /** Closes every admitted connection now. */
  destroyAll(): void {
    for (const s of this.sockets.values()) s.destroy();
  }
}
