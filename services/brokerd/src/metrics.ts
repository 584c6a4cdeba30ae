// brokerd's Prometheus endpoint: GET /metrics on the configured address (config key `metrics`,
// "127.0.0.1:9464" by default, "" for off). The metrics live in metrics/, one file per concept.
// This listener serves only /metrics: it takes no input and changes nothing, and it should stay
// on loopback (docs/design.md §2.2: brokerd listens on Unix sockets plus this).
import { createServer, type Server } from "node:http";
import { guardTcpPeers, idleHttpConnection, MAX_REFUSED_LINGERING, type PeerKey } from "@vfio-broker/native";
import type { Broker } from "./broker.js";
import type { Config } from "./config.js";
import { invalid } from "./errors.js";
import type { JournalStats } from "./journal.js";
import { logLimited } from "./log.js";
import { createBrokerMetrics } from "./metrics/collectors.js";
import type { RestartSource } from "./metrics/restart.js";

/** "127.0.0.1:9464", "[::1]:9464", "localhost:9464" -> host and port; throws with what to write. */
export function parseListenAddress(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65535)
    throw invalid(`--metrics ${value}: expected HOST:PORT such as 127.0.0.1:9464 or [::1]:9464, or "off"`);
  return { host: (m[1] ?? m[2])!, port };
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;
/** Scrapers are few; this is a bound on what anyone else can make brokerd hold. */
export const MAX_METRICS_CONNECTIONS = 128;
/**
 * Connections one uid may hold (its peer socket's owner in /proc/net/tcp): a scraper needs one,
 * so a local user holding thousands still leaves room for Prometheus. Peers that cannot be
 * identified share METRICS_UNKNOWN_PEERS.
 */
export const METRICS_CONNECTIONS_PER_UID = 4;
export const METRICS_UNKNOWN_PEERS = 8;

/** The 503 a refused /metrics connection reads before it is closed. */
function refusal(key: PeerKey | undefined, why: "total" | "per-peer"): string {
  const text =
    why === "total"
      ? `vfio-brokerd /metrics: all ${MAX_METRICS_CONNECTIONS} connections are taken; try again\n`
      : key === "unknown"
        ? `vfio-brokerd /metrics: this connection's peer is not in /proc/net/tcp, and unidentified peers ` +
          `share ${METRICS_UNKNOWN_PEERS} connections, all taken; try again\n`
        : `vfio-brokerd /metrics: uid ${key} already holds ${METRICS_CONNECTIONS_PER_UID} connections, ` +
          `the most one uid may; close one\n`;
  return (
    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\n" +
    `content-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`
  );
}

export async function startMetrics(
  broker: Broker,
  config: Config,
  journal?: { readonly stats: JournalStats },
  restart?: RestartSource,
): Promise<{ close(): Promise<void> }> {
  if (!config.metrics) return { close: async () => {} };
  const { host, port } = parseListenAddress(config.metrics);
  if (!LOOPBACK.test(host))
    process.stderr.write(
      `vfio-brokerd: warning: /metrics listens on ${host}, not loopback; anyone who can reach it sees device ids and counts\n`,
    );
  const metrics = createBrokerMetrics(broker, { journal, ...(restart ? { restart } : {}) });
  // Node checks the header and request timeouts every connectionsCheckingInterval (30 s by
  // default): 1 s, so a connection that trickles its headers (slowloris) loses its slot in 5-6 s.
  const server: Server = createServer({ connectionsCheckingInterval: 1000 }, (req, res) => {
    const path = (req.url ?? "/").split("?", 1)[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("vfio-brokerd serves only /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("use GET /metrics\n");
      return;
    }
    metrics.registry.metrics().then(
      (text) =>
        res
          .writeHead(200, { "content-type": metrics.registry.contentType })
          .end(req.method === "HEAD" ? "" : text),
      (e: unknown) =>
        res.writeHead(500, { "content-type": "text/plain" }).end(`collecting metrics failed: ${String(e)}\n`),
    );
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  // Any local user can connect to this port: cap the connections (each is an fd in brokerd) and
  // close idle keep-alive ones soon, so /metrics can never eat the fds brokerd's clients need.
  // Each connection is admitted under its peer uid's cap first (/proc/net/tcp, off the event
  // loop); maxConnections is the hard bound on fds, refusals being read included.
  const guard = guardTcpPeers(server, {
    perUid: METRICS_CONNECTIONS_PER_UID,
    // Off loopback, peers come from the network: none can be identified, only the global cap holds.
    unknown: LOOPBACK.test(host) ? METRICS_UNKNOWN_PEERS : MAX_METRICS_CONNECTIONS,
    total: MAX_METRICS_CONNECTIONS,
    // A uid at its cap trades its least recently used idle connection for a new one: only its own
    // connections in use refuse it.
    evictable: idleHttpConnection,
    refusal,
    onRefused: (key, why) =>
      logLimited(
        `metrics-refused:${key ?? why}`,
        `vfio-brokerd: /metrics: refused a connection of ${key === undefined ? "a peer" : key === "unknown" ? "an unidentified peer" : `uid ${key}`} (${why === "total" ? "all connections taken" : "its cap"})`,
      ),
  });
  server.maxConnections = MAX_METRICS_CONNECTIONS + MAX_REFUSED_LINGERING;
  server.on("request", (req) => guard.touch(req.socket));
  server.keepAliveTimeout = 5_000;
  server.timeout = 10_000; // a connection silent this long is closed, whatever state it is in
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) =>
      reject(
        invalid(
          `--metrics ${config.metrics}: cannot listen: ${(e as Error).message}; pick another port or "off"`,
        ),
      ),
    );
    // A deep accept queue (the kernel caps it at somaxconn): a user holding a thousand connects
    // in it must leave room for the scraper's, which then waits its turn, not a SYN retry.
    server.listen({ port, host, backlog: 4096 }, () => resolve());
  });
  return {
    close: () =>
      new Promise<void>((resolve) => {
        metrics.detach();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
