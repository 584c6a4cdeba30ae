// Sessions as Prometheus series: how many are connected now (read at scrape time), how many
// opened and ended and why, how long ending one took, and connections refused before they got a
// session or slot. Only reads; labels take values from SESSION_END_REASONS,
// CONNECTION_REFUSAL_REASONS and the three socket names, never from a session or a peer.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { Broker } from "../broker.js";
import { bounded, CONNECTION_REFUSAL_REASONS, SESSION_END_REASONS } from "./labels.js";
import { FAST_BUCKETS, P, subscribe } from "./series.js";

/** Registers the series; returns the detach that unsubscribes from the broker. */
export function registerSessionMetrics(registry: Registry, broker: Broker): () => void {
  const registers = [registry];
  new Gauge({
    name: `${P}sessions`,
    help: "Client sessions connected now.",
    registers,
    collect() {
      this.set(broker.sessions.size);
    },
  });
  const opened = new Counter({
    name: `${P}sessions_opened_total`,
    help: "Sessions opened.",
    registers,
  });
  const ended = new Counter({
    name: `${P}sessions_ended_total`,
    help: "Sessions ended, by reason (disconnect, process-exit, lease-expired, revoked, shutdown, ...).",
    labelNames: ["reason"],
    registers,
  });
  const leaseCleanup = new Histogram({
    name: `${P}lease_cleanup_duration_seconds`,
    help: "Time to release everything a session held when it ended (mappings, device files, pidfd).",
    buckets: FAST_BUCKETS,
    registers,
  });
  const connectionsRefused = new Counter({
    name: `${P}connections_refused_total`,
    help: "Connections refused before they got a session or slot, by socket (broker, fd, admin) and reason (limit:sessions, limit:fdConnections, limit:global_*, draining, not_admin; HTTP/2 abuse: limit:resets, limit:headers, protocol, settings-timeout, then backoff).",
    labelNames: ["socket", "reason"],
    registers,
  });
  return subscribe(broker, {
    "session.open": () => opened.inc(),
    "session.end": (_s, reason, ms) => {
      ended.inc({ reason: bounded(SESSION_END_REASONS, reason) });
      leaseCleanup.observe(ms / 1000);
    },
    "connection.refused": (socket, _peer, reason) =>
      connectionsRefused.inc({
        socket: bounded(["broker", "fd", "admin"], socket),
        reason: bounded(CONNECTION_REFUSAL_REASONS, reason),
      }),
  });
}
