// brokerd's Prometheus metrics (prom-client): what the Broker hands out and how it goes. This file
// composes the registry from one module per concept (sessions, devices, mappings, tickets, fd
// delivery and replies, policy, revocation, restart, journal) and says which brokerd is running.
// Counters and histograms are fed by the Broker's typed events; gauges are computed at scrape time
// (collect()) from broker state, so they can never drift from the truth. Metrics only read: they
// never change broker state, and never label a series with a session id, cookie, pid, uid or
// anything a client chooses (see labels.ts).
import { collectDefaultMetrics, Gauge, Registry } from "prom-client";
import { type Broker, VERSION } from "../broker.js";
import type { JournalStats } from "../journal.js";
import { registerDeviceMetrics } from "./devices.js";
import { registerFdDeliveryMetrics } from "./fd-delivery.js";
import { registerFdReplyMetrics } from "./fd-replies.js";
import { registerJournalMetrics } from "./journal.js";
import { registerMappingMetrics } from "./mappings.js";
import { registerPolicyMetrics } from "./policy.js";
import { type RestartSource, registerRestartMetrics } from "./restart.js";
import { registerRevocationMetrics } from "./revocation.js";
import { P } from "./series.js";
import { registerSessionMetrics } from "./sessions.js";
import { registerTicketMetrics } from "./tickets.js";

export interface BrokerMetrics {
  registry: Registry;
  /** Unsubscribes from the broker's events. */
  detach(): void;
}

export function createBrokerMetrics(
  broker: Broker,
  opts: {
    processMetrics?: boolean;
    journal?: { readonly stats: JournalStats };
    restart?: RestartSource;
  } = {},
): BrokerMetrics {
  const registry = new Registry();
  if (opts.journal) registerJournalMetrics(registry, opts.journal);
  if (opts.restart) registerRestartMetrics(registry, broker, opts.restart);
  if (opts.processMetrics !== false) registerProcessMetrics(registry);
  registerBuildInfo(registry);
  registerFdReplyMetrics(registry, broker);
  const detaches = [
    registerFdDeliveryMetrics(registry, broker),
    registerSessionMetrics(registry, broker),
    registerDeviceMetrics(registry, broker),
    registerMappingMetrics(registry, broker),
    registerTicketMetrics(registry, broker),
    registerPolicyMetrics(registry, broker),
    registerRevocationMetrics(registry, broker),
  ];
  return {
    registry,
    detach() {
      for (const detach of detaches) detach();
    },
  };
}

/** Node's own process series (memory, event loop lag, fds, ...). */
function registerProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  // prom-client names these gauges *_total, which promtool rejects ("non-counter metrics should not
  // have _total suffix"); the same numbers are in nodejs_active_{handles,requests,resources}{type}.
  for (const name of [
    "nodejs_active_handles_total",
    "nodejs_active_requests_total",
    "nodejs_active_resources_total",
  ])
    registry.removeSingleMetric(name);
}

function registerBuildInfo(registry: Registry): void {
  new Gauge({
    name: `${P}build_info`,
    help: "Always 1; the version label says which brokerd is running.",
    labelNames: ["version"],
    registers: [registry],
    collect() {
      this.set({ version: VERSION }, 1);
    },
  });
}
