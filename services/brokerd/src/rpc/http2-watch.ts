// The HTTP/2 watch of the gRPC transport (rpc/server.ts): each session's stream resets, header
// sizes, protocol errors and SETTINGS acknowledgement, against their budgets. An abusive session
// gets GOAWAY(ENHANCE_YOUR_CALM) and is destroyed, and its uid's tenant a reconnect backoff
// (rpc/reconnect-backoff.ts). It never admits or refuses a connection at accept, and holds no
// session or quota: it only watches what grpc-js serves.
import { constants as h2, type ServerHttp2Session, type ServerHttp2Stream } from "node:http2";
import type * as grpc from "@grpc/grpc-js";
import { ENHANCE_YOUR_CALM } from "./h2-refusal.js";
import { limitHttp2, MAX_HEADER_LIST_SIZE } from "./http2-limits.js";
import type { ReconnectBackoff } from "./reconnect-backoff.js";
import { TokenBucket } from "./token-bucket.js";

type Peer = { uid: number; pid: number };

/**
 * HTTP/2 streams one connection may see reset or cancelled (by either side): a burst, then a
 * rate. Rapid reset cancels thousands a second. An honest client cancels a call when its deadline
 * passes, which under a loaded brokerd may be every call it has in flight (32) each second.
 */
export const RESET_BURST = 64;
export const RESETS_PER_SECOND = 32;
/** A connection must acknowledge brokerd's SETTINGS (its small header table) within this. */
export const SETTINGS_ACK_MS = 10_000;

/** What the HTTP/2 watch needs of the listener: whose each connection is, and where abuse goes. */
export interface WatchContext {
  peers: Map<string, Peer>;
  backoff: ReconnectBackoff;
  tenantOf: (uid: number) => string;
  refused?: (peer: Peer, reason: string) => void;
  /** brokerd is dropping every connection (hand-over): nothing counts as abuse. */
  dropping: () => boolean;
}

/**
 * Watches the HTTP/2 sessions of `server`: each one's resets, header sizes, errors and SETTINGS
 * acknowledgement; an abusive one gets GOAWAY(ENHANCE_YOUR_CALM) and its uid a backoff. Returns
 * what stops the periodic look at streams Node refused unseen.
 */
export function watchHttp2(server: grpc.Server, w: WatchContext): () => void {
  // Node refuses streams without telling JavaScript: look every 200 ms while sessions are open.
  const watched = new Set<() => void>();
  const sweep = setInterval(() => {
    for (const check of watched) check();
  }, 200);
  sweep.unref();
  limitHttp2(server, (session) => watchSession(session, w, watched));
  return () => clearInterval(sweep);
}

/** Watches one HTTP/2 session (watchHttp2); its check of unseen streams joins `watched` while it is open. */
function watchSession(session: ServerHttp2Session, w: WatchContext, watched: Set<() => void>): void {
  const key = session.socket?.remoteAddress;
  const peer = key === undefined ? undefined : w.peers.get(key);
  if (!peer) return;
  const resets = new TokenBucket(RESET_BURST, RESETS_PER_SECOND, Date.now());
  // Streams Node refused before JavaScript saw them (over max_concurrent_streams, too many header
  // fields) are reset too: the peer opened (lastProcStreamID + 1) / 2 streams, we saw `seen`.
  let seen = 0;
  let unseen = 0;
  let struck = false;
  const abuse = (reason: string, what: string) => {
    if (struck || w.dropping() || session.destroyed) return;
    struck = true;
    const waitMs = w.backoff.strike(w.tenantOf(peer.uid), Date.now(), what);
    w.refused?.(peer, reason);
    const message = `brokerd: ${what}; uid ${peer.uid} (and every uid of its user) may not connect for ${Math.ceil(waitMs / 1000)} s`;
    try {
      // New streams past the last one processed are ignored from here on, without a callback.
      session.goaway(ENHANCE_YOUR_CALM, session.state.lastProcStreamID ?? 0, Buffer.from(message));
    } catch {
      /* closed already */
    }
    // A moment for the GOAWAY to leave, then the connection goes (and its session with it).
    setTimeout(() => session.destroy(), 50).unref();
  };
  const reset = (n: number) => {
    if (n <= 0 || resets.take(Date.now(), n)) return;
    abuse(
      "limit:resets",
      `more than ${RESET_BURST} HTTP/2 streams reset, refused or cancelled on one connection at once, or ` +
        `over ${RESETS_PER_SECOND} a second after that`,
    );
  };
  const checkUnseen = () => {
    if (session.destroyed) return;
    const opened = Math.floor(((session.state.lastProcStreamID ?? 0) + 1) / 2);
    const now = Math.max(0, opened - seen);
    if (now > unseen) reset(now - unseen);
    unseen = now;
  };
  watched.add(checkUnseen);
  // And once more as the session goes (its state is gone by 'close'): a peer whose connection
  // Node ended for it (nghttp2's own reset limit) is struck before it reconnects.
  const destroy = session.destroy;
  session.destroy = (...args: Parameters<typeof destroy>) => {
    checkUnseen();
    return destroy.apply(session, args);
  };
  session.on("stream", (stream: ServerHttp2Stream, _h: unknown, _f: unknown, rawHeaders?: string[]) => {
    seen++;
    // Each field as HPACK counts it: name + value + 32 (rawHeaders is [name, value, ...]).
    let bytes = 0;
    for (const h of rawHeaders ?? []) bytes += h.length + 16;
    if (bytes > MAX_HEADER_LIST_SIZE)
      abuse("limit:headers", `a request carried ${bytes} bytes of headers, over ${MAX_HEADER_LIST_SIZE}`);
    stream.once("close", () => {
      if (stream.rstCode !== h2.NGHTTP2_NO_ERROR) reset(1);
    });
  });
  // Node's HTTP/2 errors (a protocol error, too many invalid frames or refused streams), not the
  // socket's (a client that exits mid-call resets its connection: that is no abuse).
  session.once("error", (e: NodeJS.ErrnoException) => {
    if (e.code?.startsWith("ERR_HTTP2")) abuse("protocol", `an HTTP/2 protocol error (${e.message})`);
  });
  const ack = setTimeout(
    () =>
      abuse("settings-timeout", `brokerd's HTTP/2 SETTINGS not acknowledged in ${SETTINGS_ACK_MS / 1000} s`),
    SETTINGS_ACK_MS,
  );
  ack.unref();
  session.once("localSettings", () => clearTimeout(ack));
  session.once("close", () => {
    clearTimeout(ack);
    watched.delete(checkUnseen);
  });
}
