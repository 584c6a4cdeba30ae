// Opening a session: a connection's kernel-verified identity becomes a Session. Its slot is taken
// (sessions/slots.ts), the session is recorded by the ledger, then indexed and published, and its
// process's exit is watched (the pidfd) so the session ends even if the connection lingers. Any
// failure undoes what was taken. Owns only that; ending a session is grants/ending.ts's.
import { randomBytes } from "node:crypto";
import { watchOwnPidfd } from "@vfio-broker/native";
import type { Core } from "../core/context.js";
import { Txn } from "../core/txn.js";
import { tokenHash } from "../core/types.js";
import { quotaKeys } from "../identity/container.js";
import type { PeerIdentity } from "../identity/peer.js";
import { Session } from "../identity/session.js";
import type { SessionSlots } from "./slots.js";

/** Opens a session for identity; on refusal the caller still owns identity.pidfd (and closes it). */
export function openSession(
  core: Core,
  slots: SessionSlots,
  identity: PeerIdentity,
  onExit: (s: Session) => void,
): Session {
  const tenant = core.tenants.tenantOf(identity.uid);
  const keys = quotaKeys(identity);
  const s = Txn.run((t) => {
    t.did(slots.take(core.policy.current, identity, tenant, keys));
    const token = randomBytes(16).toString("hex");
    const s = new Session(randomBytes(8).toString("hex"), identity, keys, tokenHash(token), token, tenant);
    // Recorded first: a failed write refuses the connection.
    core.ledger.sessionOpened(s);
    return s;
  });
  core.sessions.add(s);
  core.events.emit("session.open", s);
  // The process exiting ends the session even if the connection lingers (e.g. inherited by a child).
  // The watch waits on the session's own pidfd (no dup: one fd less per session); endSession
  // closes the watch before the pidfd (grants/ending.ts).
  s.pidWatch = watchOwnPidfd(identity.pidfd, onExit, s); // no closure per session
  return s;
}
