// Journal lines for what changes on the host's side rather than a client's: policy reloads (with
// the policy now in force), device health transitions, mode switches, and Kubernetes claims bound
// and unbound (admin socket only; a line is bounded by claims/book.ts's bounds). Written in full.
// Builds lines only.
import type { Broker } from "../broker.js";
import type { Handlers, JournalLines } from "./lines.js";

export function hostLines(out: JournalLines, broker: Broker): Partial<Handlers> {
  return {
    "policy.reload": (ok, errors) =>
      out.write("policy.reload", {
        ok,
        errors,
        digest: broker.policy.digest,
        source: broker.policy.source,
      }),
    "device.health": (device, health) => out.write("device.health", { device, health }),
    "device.mode": (device, mode, previous, reason) =>
      out.write("device.mode", { device, mode, previous, reason }),
    claim: (action, c, revoked) =>
      out.write(`claim.${action}`, {
        claimUid: c.uid,
        namespace: c.namespace,
        claimName: c.name,
        podUids: c.pods,
        deviceIds: c.devices,
        mappingsRevoked: revoked.mappingsRevoked,
        sessionsEnded: revoked.sessionsEnded,
      }),
  };
}
