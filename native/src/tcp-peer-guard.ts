// tcp-peer-guard.ts: owns admitting a loopback TCP listener's connections per peer: before a
// byte of a new connection is parsed, its peer's uid is asked of the kernel (tcp-owner.ts:
// NETLINK_SOCK_DIAG, one exact lookup, at accept), and the connection is admitted under that
// uid's cap (peer-slots.ts) or refused with a one-line answer and closed. Used by brokerd's
// /metrics and the admin console, where any local user can connect. Where the kernel has no
// inet_diag, the uid is read from /proc/net/tcp{,6} instead (tcp-peer.ts), off the event loop,
// one read for every connection waiting at that moment: far slower with many sockets on the host
// (a table of 30,000 takes the kernel about a second to print). An unidentified peer goes to the
// "unknown" bucket with its own small cap; nothing is admitted that was not placed.
import { readFile } from "node:fs/promises";
import type { Server, Socket } from "node:net";
import { endianness } from "node:os";
import { type PeerKey, PeerSlots, type SlotLimits } from "./peer-slots.js";
import { tcpPeerUid } from "./tcp-owner.js";
import { parseProcNetTcp, peerUid, type TcpConnection, type TcpTable } from "./tcp-peer.js";

export interface TcpPeerGuardOptions extends SlotLimits {
  /** Bytes written to a refused connection before it is closed (e.g. an HTTP 503 that says why). */
  refusal?(key: PeerKey | undefined, why: "total" | "per-peer"): string;
  /** Called for each refusal (metrics, logs). */
  onRefused?(key: PeerKey | undefined, why: "total" | "per-peer"): void;
  /** The directory with tcp and tcp6 (default /proc/net; tests). */
  procNet?: string;
  /** How peers are identified: "kernel" (sock_diag, falling back to "proc" if unavailable) or "proc". */
  lookup?: "kernel" | "proc";
  /**
   * Whether an admitted connection may be closed to make room for a new one of the same peer
   * (e.g. no request in progress). A peer at its cap then trades its least recently used such
   * connection (see touch()) for the new one instead of being refused: the cap still holds, and
   * what locks a peer out is only its own connections in use (a browser's idle keep-alive ones
   * never do).
   */
  evictable?(socket: Socket): boolean;
}

/** Refused connections kept open at once to read their answer (more are just closed). */
export const MAX_REFUSED_LINGERING = 16;
const REFUSED_LINGER_MS = 1000;
const ADMITTED = Symbol("vfio-broker.tcp-peer-admitted");

type Guarded = Socket & { [ADMITTED]?: true };

/**
 * For http.Server: a connection with no response in progress (between keep-alive requests, or
 * still sending its headers) may make room for a newer one of its peer.
 */
export function idleHttpConnection(socket: Socket): boolean {
  return !(socket as Socket & { _httpMessage?: unknown })._httpMessage;
}

export interface TcpPeerGuard {
  readonly slots: PeerSlots;
  /** The connection was just used (a request): it is the last its peer would give up. */
  touch(socket: Socket): void;
  /** Connections waiting for their peer to be identified. */
  readonly pending: number;
}

/**
 * Puts `server` (a net or http server, before or after listen) behind per-peer caps: its
 * 'connection' listeners see only admitted sockets. Set server.maxConnections to at least
 * total + 16 (refusals kept open to be read) as the hard bound on its fds.
 */
export function guardTcpPeers(server: Server, opts: TcpPeerGuardOptions): TcpPeerGuard {
  const slots = new PeerSlots(opts);
  const procNet = opts.procNet ?? "/proc/net";
  const littleEndian = endianness() === "LE";
  let pending = 0;
  let lingering = 0;
  let queue: { socket: Socket; done(uid: number | undefined): void }[] = [];
  let reading = false;
  let kernel = (opts.lookup ?? "kernel") === "kernel";

  const readTable = async (file: string, into: TcpTable, port: number | undefined) => {
    try {
      parseProcNetTcp(await readFile(`${procNet}/${file}`, "latin1"), littleEndian, into, port);
    } catch {
      /* no such table (no IPv6): its peers stay unknown */
    }
  };

  const drain = async () => {
    if (reading) return;
    reading = true;
    while (queue.length > 0) {
      // Everything queued so far was accepted before this read begins: its peer is in the table.
      const batch = queue;
      queue = [];
      const table: TcpTable = new Map();
      // Only lines of sockets connected to our port are parsed (a listener has one port).
      const ports = new Set(batch.map((w) => w.socket.localPort));
      const port = ports.size === 1 ? [...ports][0] : undefined;
      await readTable("tcp", table, port);
      if (batch.some((w) => w.socket.remoteFamily === "IPv6")) await readTable("tcp6", table, port);
      for (const w of batch) {
        const { localAddress, localPort, remoteAddress, remotePort } = w.socket;
        w.done(
          localAddress && remoteAddress && localPort && remotePort
            ? peerUid(table, { localAddress, localPort, remoteAddress, remotePort })
            : undefined,
        );
      }
    }
    reading = false;
  };

  const refuse = (socket: Socket, key: PeerKey | undefined, why: "total" | "per-peer") => {
    opts.onRefused?.(key, why);
    if (!opts.refusal || lingering >= MAX_REFUSED_LINGERING) {
      // A reset: no FIN handshake and no TIME_WAIT left on our side for each refusal.
      socket.resetAndDestroy();
      return;
    }
    lingering++;
    const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
    socket.once("close", () => {
      clearTimeout(timer);
      lingering--;
    });
    socket.resume(); // whatever it sends is dropped, unparsed
    socket.end(opts.refusal(key, why));
  };

  // Admitted connections per peer, least recently used first (a Set keeps insertion order).
  const admitted = new Map<PeerKey, Set<Socket>>();
  const keyOf = new WeakMap<Socket, PeerKey>();
  const release = (key: PeerKey, socket: Socket) => {
    const set = admitted.get(key);
    if (!set?.delete(socket)) return; // given back already (evicted)
    if (set.size === 0) admitted.delete(key);
    slots.give(key);
  };
  /** Closes key's least recently used evictable connection, its slot given back at once; false if none. */
  const evict = (key: PeerKey): boolean => {
    if (!opts.evictable) return false;
    for (const old of admitted.get(key) ?? [])
      if (opts.evictable(old)) {
        release(key, old);
        old.destroy();
        return true;
      }
    return false;
  };

  const place = (socket: Guarded, uid: number | undefined, go: () => void) => {
    const key: PeerKey = uid ?? "unknown";
    let why = slots.refusal(key);
    if (why === "per-peer" && evict(key)) why = slots.refusal(key);
    if (why !== "") {
      refuse(socket, key, why);
      return;
    }
    slots.take(key);
    const set = admitted.get(key) ?? new Set<Socket>();
    admitted.set(key, set);
    set.add(socket);
    keyOf.set(socket, key);
    socket.once("close", () => release(key, socket));
    socket[ADMITTED] = true;
    go();
  };

  const admit = (socket: Guarded, go: () => void) => {
    socket.on("error", () => {});
    const { localAddress, localPort, remoteAddress, remotePort } = socket;
    if (!localAddress || !remoteAddress || !localPort || !remotePort) {
      place(socket, undefined, go);
      return;
    }
    const conn: TcpConnection = { localAddress, localPort, remoteAddress, remotePort };
    if (kernel) {
      try {
        place(socket, tcpPeerUid(conn), go);
        return;
      } catch {
        kernel = false; // no inet_diag here: /proc/net/tcp from now on
      }
    }
    if (slots.total + pending >= opts.total) {
      refuse(socket, undefined, "total");
      return;
    }
    pending++;
    queue.push({
      socket,
      done: (uid) => {
        pending--;
        if (!socket.destroyed) place(socket, uid, go);
      },
    });
    void drain();
  };

  const emit = server.emit as (this: Server, event: string | symbol, ...args: unknown[]) => boolean;
  server.emit = function guardedEmit(this: Server, event: string | symbol, ...args: unknown[]): boolean {
    const socket = args[0] as Guarded;
    if (event !== "connection" || socket[ADMITTED]) return emit.call(this, event, ...args);
    admit(socket, () => emit.call(this, event, ...args));
    return true;
  } as typeof server.emit;

  return {
    slots,
    touch(socket) {
      const key = keyOf.get(socket);
      const set = key === undefined ? undefined : admitted.get(key);
      if (set?.delete(socket)) set.add(socket);
    },
    get pending() {
      return pending;
    },
  };
}
