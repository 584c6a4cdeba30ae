// Journal lines for revocation: each revocation and how many mappings it took, revoked mappings
// their holder may still map (held, booked until it unmaps or exits) and how each hold ended, and
// holders killed for keeping one past its grace. Every one is written in full. Builds lines only.
import { holdFields } from "./fields.js";
import type { Handlers, JournalLines } from "./lines.js";

export function revocationLines(out: JournalLines): Partial<Handlers> {
  return {
    revocation: (reason, count) => out.write("revocation", { reason, mappings: count }),
    // A revoked mapping its holder may still map: booked until it unmaps (release) or exits.
    "mapping.hold": (h) => out.write("mapping.hold", holdFields(h)),
    "mapping.unhold": (h, how) => out.write("mapping.unhold", { ...holdFields(h), how }),
    "mapping.revoke.enforced": (hs, result) =>
      out.write("mapping.revoke.enforced", {
        pid: hs[0]?.pid,
        uid: hs[0]?.uid,
        by: hs[0]?.enforceBy,
        reason: hs[0]?.reason,
        signal: "SIGKILL",
        result,
        holds: hs.map((h) => h.id),
      }),
  };
}
