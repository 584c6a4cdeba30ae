// Journal lines for what brokerd refused: connections refused before they got a session or slot,
// and requests the policy denied. A client can repeat these at will, so each is aggregated per
// identity and result (one full line per window, then counts). Builds lines only.
import { bounded, DENY_REASONS } from "../metrics/labels.js";
import type { Handlers, JournalLines } from "./lines.js";

const SOCKETS = ["broker", "fd", "admin"] as const;

export function refusalLines(out: JournalLines): Partial<Handlers> {
  return {
    "connection.refused": (socket, peer, reason) =>
      out.repeated(
        "connection.refused",
        { uid: peer.uid, socket: bounded(SOCKETS, socket), reason: reason.slice(0, 64) },
        peer.pid,
        { socket, uid: peer.uid, pid: peer.pid, reason },
      ),
    denied: (s, reason, message) =>
      out.repeated(
        "denied",
        { uid: s?.identity.uid ?? "unknown", reason: bounded(DENY_REASONS, reason) },
        s?.identity.pid,
        { session: s?.id, uid: s?.identity.uid, pid: s?.identity.pid, reason, message },
      ),
  };
}
