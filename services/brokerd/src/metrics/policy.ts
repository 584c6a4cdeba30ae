// The policy as Prometheus series: requests it denied, by reason, its reloads, by result, and the
// Kubernetes claims bound into it. Only reads; labels take values from DENY_REASONS, "ok"/"error"
// and "bind"/"unbind", never from a request.
import { Counter, Gauge, type Registry } from "prom-client";
import type { Broker } from "../broker.js";
import { bounded, DENY_REASONS } from "./labels.js";
import { P, subscribe } from "./series.js";

/** Registers the series; returns the detach that unsubscribes from the broker. */
export function registerPolicyMetrics(registry: Registry, broker: Broker): () => void {
  const registers = [registry];
  const denials = new Counter({
    name: `${P}policy_denials_total`,
    help: "Requests the policy denied, by reason (no_rule, device, region, attribute, prot, read_write).",
    labelNames: ["reason"],
    registers,
  });
  const reloads = new Counter({
    name: `${P}policy_reloads_total`,
    help: 'Policy reloads, by result ("ok" or "error": the old policy stays).',
    labelNames: ["result"],
    registers,
  });
  new Gauge({
    name: `${P}claims_bound`,
    help: "Kubernetes ResourceClaims bound to pods (AdminService.BindClaim), read by match: { claims: true } rules.",
    registers,
    collect() {
      this.set(broker.claims.size);
    },
  });
  const claimChanges = new Counter({
    name: `${P}claim_changes_total`,
    help: 'Claim bindings made or replaced ("bind") and removed ("unbind").',
    labelNames: ["action"],
    registers,
  });
  for (const a of ["bind", "unbind"]) claimChanges.inc({ action: a }, 0);
  // Zero the known series so rate() and absent() work from the first scrape.
  for (const r of DENY_REASONS) denials.inc({ reason: r }, 0);
  for (const r of ["ok", "error"]) reloads.inc({ result: r }, 0);
  return subscribe(broker, {
    denied: (_s, reason) => denials.inc({ reason: bounded(DENY_REASONS, reason) }),
    "policy.reload": (ok) => reloads.inc({ result: ok ? "ok" : "error" }),
    claim: (action) => claimChanges.inc({ action }),
  });
}
