// Mappings as Prometheus series: those live now by device, region and attribute, the bytes they
// map and those waiting for their fd (read at scrape time), and CreateMapping's grants, refusals,
// latency and the releases. Only reads; labels are configured device ids, VFIO region names and
// values from ATTRIBUTES, REFUSAL_CODES, REFUSAL_REASONS and RELEASE_REASONS.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { Broker } from "../broker.js";
import type { Mapping } from "../grants/device-file.js";
import { ATTRIBUTES, bounded, REFUSAL_CODES, REFUSAL_REASONS, RELEASE_REASONS } from "./labels.js";
import { perDevice } from "./per-device.js";
import { FAST_BUCKETS, P, subscribe } from "./series.js";

/** Registers the series; returns the detach that unsubscribes from the broker. */
export function registerMappingMetrics(registry: Registry, broker: Broker): () => void {
  const registers = [registry];
  new Gauge({
    name: `${P}mappings_live`,
    help: "Mappings live now (pending or delivered), by device, region and effective attribute.",
    labelNames: ["device", "region", "attribute"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice(broker))
        for (const [key, n] of d.mappings) {
          const [region, attribute] = key.split("\u0000") as [string, string];
          this.set({ device, region, attribute }, n);
        }
    },
  });
  new Gauge({
    name: `${P}mapped_bytes`,
    help: "Bytes of device regions mapped by live mappings, by device.",
    labelNames: ["device"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice(broker)) this.set({ device }, Number(d.bytes));
    },
  });
  new Gauge({
    name: `${P}pending_mappings`,
    help: "Mappings created whose fd was not fetched yet (each holds one backing fd in brokerd).",
    registers,
    collect() {
      this.set(broker.pendingMappings);
    },
  });
  const grants = new Counter({
    name: `${P}mapping_grants_total`,
    help: 'Mappings granted by CreateMapping, by device, region, effective attribute and result ("exact" or "fallback").',
    labelNames: ["device", "region", "attribute", "result"],
    registers,
  });
  const refusals = new Counter({
    name: `${P}mapping_refusals_total`,
    help: "CreateMapping calls refused, by gRPC code and reason (range, attribute_conflict, limit:bytes, policy:attribute, ...).",
    labelNames: ["code", "reason"],
    registers,
  });
  const releases = new Counter({
    name: `${P}mapping_releases_total`,
    help: "Mappings released, by device and reason (client, operator, ticket-expired, disconnect, device-drain, ...).",
    labelNames: ["device", "reason"],
    registers,
  });
  const createLatency = new Histogram({
    name: `${P}create_mapping_duration_seconds`,
    help: "Time brokerd spent in a successful CreateMapping (policy, backing, cookie allocation, ticket).",
    buckets: FAST_BUCKETS,
    registers,
  });
  const created = (m: Mapping, ms: number) => {
    grants.inc({
      device: m.deviceFile.device.id,
      region: m.region.name,
      attribute: bounded(ATTRIBUTES, m.effectiveAttribute),
      result: m.effectiveAttribute === m.requestedAttribute ? "exact" : "fallback",
    });
    createLatency.observe(ms / 1000);
  };
  return subscribe(broker, {
    "mapping.refused": (code, reason) =>
      refusals.inc({ code: bounded(REFUSAL_CODES, code), reason: bounded(REFUSAL_REASONS, reason) }),
    "mapping.create": (m, ms) => created(m, ms),
    // The fast path's creation (its ok delivery is counted with the others in metrics/tickets.ts).
    "mapping.grant": (m, ms) => created(m, ms),
    "mapping.release": (m, reason) =>
      releases.inc({ device: m.deviceFile.device.id, reason: bounded(RELEASE_REASONS, reason) }),
  });
}
