// One connection the fd channel's transport serves (fdpass/transport.ts): its socket, its peer,
// what its replies hold in flight, and where it is in its life (reading, ended, finished). It is
// what a protocol sees (FdConnection) and its socket's FrameReceiver; everything it does goes
// through its transport. It never reads, sends or decides anything itself.
import type { FdMessage, FdSocket, FrameReceiver } from "@vfio-broker/native";
import { identityOfSocket, type PeerIdentity } from "../identity/peer.js";
import type { FdAccount, FdConnectionPeer } from "../sessions/fd-connections.js";
import type { FdConnection } from "./connection.js";
import type { FdTransport } from "./transport.js";
import { UnreadReplies } from "./unread.js";

/**
 * One served connection: its socket, whose it is, and what its replies hold in flight. It is its
 * socket's FrameReceiver: a pending read holds no promise or closure.
 */
export class Conn implements FdConnection, FrameReceiver {
  readonly unread = new UnreadReplies();
  /** SIOCOUTQ when last looked at. */
  outq = 0;
  /** Private fd dups held for a reply whose send would block. */
  held = 0;
  /** What the core charges the identity for this connection (set once admitted). */
  account!: FdAccount;
  /** A session's lease: never closed for idling. */
  leased = false;
  /** end() was called: no frame is read or served after the one being served. */
  ended = false;
  /** A recv() for its next frame is pending (nothing else of it waits). */
  reading = false;
  /** The transport is done serving it (finish() ran): it lingers, then closes. */
  finished = false;
  /** Frames served since the connection opened (for FRAMES_PER_TURN). */
  served = 0;
  /** The idle close of a connection that is not a lease, while its next frame is awaited. */
  timer: NodeJS.Timeout | undefined;

  constructor(
    readonly sock: FdSocket,
    readonly peer: FdConnectionPeer,
    private readonly transport: FdTransport,
  ) {}

  reply(bytes: Uint8Array, fds: number[] = []): Promise<void> {
    return this.transport.send(this.sock, bytes, fds, this);
  }
  room(fds: number): true | Promise<boolean> {
    return this.transport.room(this, fds);
  }
  identify(): PeerIdentity {
    return identityOfSocket(this.sock.fd);
  }
  holdOpen(): void {
    this.leased = true;
  }

  /** A frame being served, or a wait for room, sees `ended` when it is done; a pending read ends now. */
  end(): void {
    this.ended = true;
    if (this.reading) queueMicrotask(() => this.transport.finish(this));
  }

  get queued(): number {
    return this.sock.pendingSends;
  }

  onFrame(err: Error | null, msg: FdMessage | null): void {
    this.transport.delivered(this, err, msg);
  }

  /** Its account asks: what the peer has not read, from the kernel (FdConnections' Settles). */
  settle(): void {
    this.transport.settle(this);
  }
}
