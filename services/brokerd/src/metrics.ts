// brokerd's Prometheus endpoint: GET /metrics on the configured address (config key `metrics`,
// "127.0.0.1:9464" by default, "" for off). The metrics themselves live in metrics/collectors.ts.
// This listener serves only /metrics: it takes no input and changes nothing, and it should stay
// on loopback (DESIGN.md §4: brokerd listens on Unix sockets plus this).
import { createServer, type Server } from "node:http";
import type { Broker } from "./broker.js";
import type { Config } from "./config.js";
import { invalid } from "./errors.js";
import type { JournalStats } from "./journal.js";
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
  const server: Server = createServer((req, res) => {
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
  server.maxConnections = MAX_METRICS_CONNECTIONS;
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
    server.listen(port, host, () => resolve());
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
