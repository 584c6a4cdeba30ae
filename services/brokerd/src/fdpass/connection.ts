// The contract between the fd channel's transport (fdpass/transport.ts) and the protocol spoken over
// it (fdpass/protocols.ts, adapter.ts, workload-adapter.ts): what a protocol sees of one served
// connection, and what the transport asks of a protocol (and how it calls serve). No I/O, no state.
import type { PeerIdentity } from "../identity/peer.js";
import type { FdConnectionPeer } from "../sessions/fd-connections.js";

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
  /**
   * Whether a reply carrying `fds` fds fits the identity's unreadFds quota: true at once (no
   * promise, no microtask: the usual case), else a wait until it does; false: close.
   */
  room(fds: number): true | Promise<boolean>;
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

/**
 * p.serve(conn, frame), a throw as a rejection. Not `new Promise((r) => r(p.serve(...)))`: resolving
 * a promise with another costs two more microtasks on every frame.
 */
export function serveFrame(p: FdProtocol, conn: FdConnection, frame: Uint8Array): Promise<boolean> {
  try {
    return p.serve(conn, frame);
  } catch (e) {
    return Promise.reject(e);
  }
}
