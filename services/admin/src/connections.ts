// The console port's connection bounds: any local user can connect to it, so none may hold it.
// Each connection is admitted under its peer's uid (asked of the kernel by the shared
// @vfio-broker/native/tcp-peer-guard, before a byte is parsed): 64 per uid, 256 in all (a uid at
// its cap trades its least recently used idle connection for a new one); and a
// connection that sends nothing, trickles its headers or never finishes its request is closed
// within seconds. What a refused connection reads says why. Where peers cannot be identified
// (a non-loopback --listen: peers come from the network or a port-publishing proxy) only the
// global cap and the timeouts hold, which a local user who reaches the port can still fill.
import type { Server, ServerOptions } from "node:http";
import type { PeerKey } from "@vfio-broker/native/peer-slots";
import {
  guardTcpPeers,
  idleHttpConnection,
  MAX_REFUSED_LINGERING,
  type TcpPeerGuard,
} from "@vfio-broker/native/tcp-peer-guard";

/**
 * Connections one uid may hold in use at once (a browser opens about 6 per host and origin, and
 * the pages it shows may open more; curl and scripts a few).
 */
export const CONSOLE_CONNECTIONS_PER_UID = 64;
/** Connections all unidentified peers share, on a loopback listener (where each peer should be found). */
export const CONSOLE_UNKNOWN_PEERS = 16;
/** Connections in all: each is an fd and a little memory. */
export const MAX_CONSOLE_CONNECTIONS = 256;

/** fastify's server options for these bounds (Node's http.Server settings underneath). */
export const CONNECTION_OPTIONS: {
  connectionTimeout: number;
  keepAliveTimeout: number;
  requestTimeout: number;
  maxRequestsPerSocket: number;
  http: ServerOptions;
} = {
  // Silent this long, whatever its state: closed.
  connectionTimeout: 10_000,
  // Idle between requests this long: closed (fastify's default is 72 s).
  keepAliveTimeout: 5_000,
  // A whole request, headers and body (16 KiB at most), within this.
  requestTimeout: 15_000,
  // Then the connection is closed after its answer: no connection lives on requests forever.
  maxRequestsPerSocket: 1000,
  // Headers within 5 s, checked every second (Node checks every 30 s by default, which would let
  // a slowloris hold a slot that long).
  http: { headersTimeout: 5_000, connectionsCheckingInterval: 1_000 },
};

function refusal(key: PeerKey | undefined, why: "total" | "per-peer"): string {
  const text =
    why === "total"
      ? `vfio-broker-admin: all ${MAX_CONSOLE_CONNECTIONS} connections are taken; try again\n`
      : key === "unknown"
        ? "vfio-broker-admin: this connection's peer is not in /proc/net/tcp, and unidentified peers " +
          `share ${CONSOLE_UNKNOWN_PEERS} connections, all taken; try again\n`
        : `vfio-broker-admin: uid ${key} already holds ${CONSOLE_CONNECTIONS_PER_UID} connections to the ` +
          "console, the most one uid may; close some\n";
  return (
    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\n" +
    `content-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`
  );
}

/** Puts the console's server behind the caps; `loopback`: whether it listens on loopback only. */
export function limitConnections(server: Server, loopback: boolean): TcpPeerGuard {
  const guard = guardTcpPeers(server, {
    perUid: CONSOLE_CONNECTIONS_PER_UID,
    unknown: loopback ? CONSOLE_UNKNOWN_PEERS : MAX_CONSOLE_CONNECTIONS,
    total: MAX_CONSOLE_CONNECTIONS,
    // A uid at its cap trades its oldest idle connection for the new one, so the operator's browser
    // (whose pages may open many) never locks the operator out with idle keep-alive connections.
    evictable: idleHttpConnection,
    refusal,
  });
  server.maxConnections = MAX_CONSOLE_CONNECTIONS + MAX_REFUSED_LINGERING;
  server.on("request", (req) => guard.touch(req.socket));
  return guard;
}
