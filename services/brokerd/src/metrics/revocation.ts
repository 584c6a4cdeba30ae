// Revocations and holds as Prometheus series: revocations and the mappings they took, by reason;
// revoked mappings still held and their bytes (read at scrape time from broker.holds); how holds
// ended; holders killed for keeping a revoked mapping. Only reads; labels take values from
// REVOCATION_REASONS and fixed lists, never from a holder.
import { Counter, Gauge, type Registry } from "prom-client";
import type { Broker } from "../broker.js";
import { bounded, REVOCATION_REASONS } from "./labels.js";
import { P, subscribe } from "./series.js";

/** Registers the series; returns the detach that unsubscribes from the broker. */
export function registerRevocationMetrics(registry: Registry, broker: Broker): () => void {
  const registers = [registry];
  const revocations = new Counter({
    name: `${P}revocations_total`,
    help: "Revocations (operator mapping/session revokes, device drain, device gone), by reason.",
    labelNames: ["reason"],
    registers,
  });
  const revokedMappings = new Counter({
    name: `${P}revoked_mappings_total`,
    help: "Mappings taken away by revocations, by reason.",
    labelNames: ["reason"],
    registers,
  });
  new Gauge({
    name: `${P}revoking_mappings`,
    help: "Revoked mappings whose holder has not unmapped them yet (it may still map them): their pages and quota stay booked until it releases them or exits.",
    registers,
    collect() {
      this.set(broker.holds.size);
    },
  });
  new Gauge({
    name: `${P}revoking_bytes`,
    help: "Bytes of revoked mappings still held (see revoking_mappings).",
    registers,
    collect() {
      this.set(Number(broker.holds.bytes));
    },
  });
  const unholds = new Counter({
    name: `${P}revoked_mapping_unmaps_total`,
    help: 'Revoked mappings whose booking ended, by how ("release": the holder released it, "exit": its process exited).',
    labelNames: ["how"],
    registers,
  });
  const enforced = new Counter({
    name: `${P}revocations_enforced_total`,
    help: 'Holders brokerd killed (SIGKILL through their pidfd) because they kept a revoked mapping past its grace, by result ("killed", "gone": it had exited, "error": e.g. EPERM without CAP_KILL).',
    labelNames: ["result"],
    registers,
  });
  // Zero the known series so rate() and absent() work from the first scrape.
  for (const how of ["release", "exit"]) unholds.inc({ how }, 0);
  enforced.inc({ result: "killed" }, 0);
  for (const r of REVOCATION_REASONS) {
    revocations.inc({ reason: r }, 0);
    revokedMappings.inc({ reason: r }, 0);
  }
  return subscribe(broker, {
    revocation: (reason, count) => {
      const r = bounded(REVOCATION_REASONS, reason);
      revocations.inc({ reason: r });
      revokedMappings.inc({ reason: r }, count);
    },
    "mapping.unhold": (_h, how) => unholds.inc({ how: bounded(["release", "exit"], how) }),
    "mapping.revoke.enforced": (_hs, result) =>
      enforced.inc({ result: bounded(["killed", "gone", "error"], result) }),
  });
}
