// Journal lines for grants: mappings created (or granted and delivered at once on the fast path),
// released, shared or given back, and fd deliveries. Successes are a client's churn (full lines up
// to a budget per identity, then counted); failed deliveries are what a client can repeat at will
// (one full line per identity and result per window). Builds lines only; never changes broker state.
import type { Broker } from "../broker.js";
import { bounded, FD_RESULTS } from "../metrics/labels.js";
import { mappingDetail, mappingFields, peerFields, whose } from "./fields.js";
import type { Handlers, JournalLines } from "./lines.js";

export function grantLines(out: JournalLines, broker: Broker): Partial<Handlers> {
  return {
    "mapping.create": (m) => {
      const w = whose(broker, m.deviceFile.sessionId);
      out.churn("mapping.create", w.uid, w.pid, mappingDetail(m), () => mappingFields(m));
    },
    // The fast path's create + delivery: one line, with the peer the fd went to.
    "mapping.grant": (m, _ms, peer) =>
      out.churn("mapping.grant", peer.uid, peer.pid, mappingDetail(m), () => ({
        ...mappingFields(m),
        ...peerFields(peer),
      })),
    "mapping.release": (m, reason) => {
      const w = whose(broker, m.deviceFile.sessionId);
      out.churn("mapping.release", w.uid, w.pid, `${mappingDetail(m)} ${reason}`, () => ({
        ...mappingFields(m),
        reason,
      }));
    },
    "mapping.refs": (m, how) => {
      const w = whose(broker, m.deviceFile.sessionId);
      out.churn("mapping.refs", w.uid, w.pid, `${mappingDetail(m)} ${how}`, () => ({
        ...mappingFields(m),
        change: how,
        refs: m.refs,
      }));
    },
    "fd.delivery": (result, m, _ms, peer) => {
      const full = { result, ...peerFields(peer), ...(m ? mappingFields(m) : {}) };
      // Delivered fds within the identity's budget of full lines, the rest counted; failures are
      // what a client can repeat at will: one full line per window.
      if (result === "ok")
        out.churn("fd.delivery", peer?.uid ?? "unknown", peer?.pid, m ? mappingDetail(m) : "", () => full);
      else
        out.repeated(
          "fd.delivery",
          { uid: peer?.uid ?? "unknown", result: bounded(FD_RESULTS, result) },
          peer?.pid,
          full,
        );
    },
  };
}
