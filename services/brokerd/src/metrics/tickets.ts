// Tickets and fd deliveries as Prometheus series: tickets not redeemed yet (read at scrape time),
// deliveries on the fd channel by result and their latency, tickets refused and expired. The
// kernel's failed sends are in fd-delivery.ts. Only reads; labels take values from FD_RESULTS.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { Broker } from "../broker.js";
import { bounded, FD_RESULTS, RELEASE_REASONS } from "./labels.js";
import { FAST_BUCKETS, P, subscribe } from "./series.js";

/** Registers the series; returns the detach that unsubscribes from the broker. */
export function registerTicketMetrics(registry: Registry, broker: Broker): () => void {
  const registers = [registry];
  new Gauge({
    name: `${P}tickets_outstanding`,
    help: "Mappings created whose ticket has not been redeemed on the fd channel yet.",
    registers,
    collect() {
      let n = 0;
      for (const s of broker.sessions.values())
        for (const df of s.deviceFiles.values())
          for (const m of df.mappings.values()) if (m.state === "pending") n++;
      this.set(n);
    },
  });
  new Gauge({
    name: `${P}tickets_held`,
    help: "Tickets brokerd holds, by state: live (issued, not redeemed; bounded by the quotas) and spent (used, expired or revoked, remembered so a replay is told so; at most 4096, the oldest forgotten first).",
    labelNames: ["state"],
    registers,
    collect() {
      const spent = broker.tickets.spentSize;
      this.set({ state: "spent" }, spent);
      this.set({ state: "live" }, broker.tickets.size - spent);
    },
  });
  const deliveries = new Counter({
    name: `${P}fd_deliveries_total`,
    help: "fd deliveries on the fd channel (ticket redemptions and fast-path grants), by result (ok, expired, already_used, wrong_peer, ...). ok counts fds handed to the send; a send the kernel then refused is in fd_delivery_failures_total.",
    labelNames: ["result"],
    registers,
  });
  const latency = new Histogram({
    name: `${P}fd_delivery_duration_seconds`,
    help: "Time brokerd spent redeeming a ticket on the fd channel, by result; a fast-path grant's delivery adds no work of its own and counts as 0 (its time is in create_mapping_duration_seconds).",
    labelNames: ["result"],
    buckets: FAST_BUCKETS,
    registers,
  });
  const expired = new Counter({
    name: `${P}tickets_expired_total`,
    help: "Tickets that expired unredeemed (their pending mapping was dropped).",
    registers,
  });
  const refused = new Counter({
    name: `${P}tickets_refused_total`,
    help: "Tickets presented on the fd channel and refused, by reason.",
    labelNames: ["reason"],
    registers,
  });
  // Zero the known series so rate() and absent() work from the first scrape.
  for (const r of FD_RESULTS) deliveries.inc({ result: r }, 0);
  return subscribe(broker, {
    // The fast path: an ok delivery with its creation (the delivery's time is in the creation's).
    "mapping.grant": () => {
      deliveries.inc({ result: "ok" });
      latency.observe({ result: "ok" }, 0);
    },
    "mapping.release": (_m, reason) => {
      if (bounded(RELEASE_REASONS, reason) === "ticket-expired") expired.inc();
    },
    "fd.delivery": (result, _m, ms) => {
      const r = bounded(FD_RESULTS, result);
      deliveries.inc({ result: r });
      latency.observe({ result: r }, ms / 1000);
      if (r !== "ok") refused.inc({ reason: r });
    },
  });
}
