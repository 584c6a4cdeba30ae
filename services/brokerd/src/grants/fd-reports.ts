// fd-reports.ts: owns what the core tells the Broker's listeners (metrics, the audit journal) and
// the operator's stderr about the fd channel's outcomes that are not a grant's own events: a
// connection refused before it was served, a request that could not be read, a reply whose fds
// could not be sent. It never decides anything, changes no state and never touches a socket: the
// code that decided calls it.

import type { Broker, FdPeer } from "../broker.js";
import { logLimited } from "../log.js";

/** A connection to the fd channel was refused (a quota, the tenant's share): why, for the journal. */
export function reportFdRefused(broker: Broker, peer: FdPeer, reason: string): void {
  const who = { uid: peer.uid, pid: peer.pid };
  broker.emit("connection.refused", "fd", who, reason);
  broker.emit("fd.delivery", "refused_busy", undefined, 0, who);
}

/** A request on the fd channel was not a well-formed FdRequest (or its strings were over their limits). */
export function reportFdBadRequest(broker: Broker, peer: FdPeer): void {
  broker.emit("fd.delivery", "bad_request", undefined, 0, peer);
}

/**
 * A reply carrying fds could not be sent: counted by errno (fdpass/delivery-failure.ts's label)
 * and said on stderr, rate-limited.
 */
export function reportFdUndeliverable(
  broker: Broker,
  failure: { errno: string; message: string },
  peer: FdPeer,
): void {
  broker.emit("fd.undeliverable", failure.errno, { uid: peer.uid, pid: peer.pid });
  logLimited(
    "fd-undeliverable",
    `vfio-brokerd: fd channel: ${failure.message} (peer uid ${peer.uid} pid ${peer.pid})`,
  );
}
