// shutdown.ts: stops a running brokerd (SIGTERM, SIGINT, tests): it stops accepting, lets every
// leased client hear why, and closes every socket and fd it holds, in the order clients depend on.
// It never runs on a failed start (daemon/unwind.ts closes what a start opened) and never after a
// hand-over (the successor serves the sockets then).
import { HealthCheckResponse_ServingStatus } from "@vfio-broker/proto";
import type { Parts } from "./parts.js";

/**
 * The journal records `reason`. keepGrants: the state store is frozen first, every lease hears
 * "restart", and the next brokerd restores and resumes every session; else every session ends
 * and its grants are released.
 */
export async function shutdown(
  p: Parts,
  handover: { close(): Promise<void> },
  reason: string,
  keepGrants: boolean,
): Promise<void> {
  if (p.life.handedOver) return;
  p.life.draining = true;
  await handover.close();
  p.health.setAll(HealthCheckResponse_ServingStatus.NOT_SERVING);
  if (keepGrants) p.ledger.freeze();
  // New fd-channel connections wait in the backlog; the open ones stay until the leases flushed
  // (a workload-protocol session's lease is its fd-channel connection).
  p.fdChannel.pauseAccepting();
  // Every leased client hears "shutdown" (revocations, then LeaseEnded) before its connection
  // closes; broker.close() waits for that, about 1 s at most. Keeping grants, it hears "restart"
  // instead, and no session ends.
  await p.broker.close(keepGrants);
  // Keeping grants, the socket files stay: under systemd the sockets live on in the fdstore.
  p.fdChannel.close({ keepPath: keepGrants });
  const { brokerSocket, adminSocket } = p;
  if (keepGrants) brokerSocket.listening.dropAll();
  await Promise.all([
    brokerSocket.listening.listener.close(),
    adminSocket.listening.listener.close(),
    p.metrics?.close(),
  ]);
  brokerSocket.server.forceShutdown();
  adminSocket.server.forceShutdown();
  for (const b of p.backends) b.close();
  p.store.close();
  p.journal.close(keepGrants ? `${reason} (grants kept for the next brokerd)` : reason);
  p.lock.release();
  p.places.close();
}
