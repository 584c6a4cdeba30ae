// The core's events: what happened, published after the change is recorded (state/ledger.ts) and
// made. The journal, metrics and transports listen; nothing a listener does can undo a change or
// reach the caller: a listener that throws is logged (rate-limited) and the next one still runs.
// Owns the event names and their arguments; must never decide or record anything itself.
import { EventEmitter } from "node:events";
import type { ClaimRec } from "../claims/book.js";
import type { DeviceHealth, DeviceMode } from "../devices/backend.js";
import type { DeviceFile, Mapping } from "../grants/device-file.js";
import type { Hold } from "../grants/holds.js";
import type { Session } from "../identity/session.js";
import { logLimited } from "../log.js";
import type { FdPeer, RevokeCounts } from "./types.js";

export interface BrokerEvents {
  "session.open": [Session];
  "session.end": [Session, string, number];
  /**
   * The session ended: its transport closes the connection once `flushed` settles (the lease's
   * last event, LeaseEnded, is on its way then).
   */
  "session.closed": [Session, Promise<void>];
  /** AdminService.SetDeviceMode moved a device: its id, the new mode, the old one, the operator's reason. */
  "device.mode": [string, DeviceMode, DeviceMode, string];
  "devicefile.open": [DeviceFile];
  "devicefile.close": [DeviceFile, string];
  "mapping.create": [Mapping, number];
  /**
   * The fast path's grant: a mapping created and delivered to `peer` at once (no ticket). Stands
   * for "mapping.create" + an ok "fd.delivery": one state record and one journal line.
   */
  "mapping.grant": [Mapping, number, FdPeer];
  /** SetMappingAttribute changed a pending mapping's attribute (and its backing). */
  "mapping.update": [Mapping];
  /** A session restored after a restart was taken up again by its process (the fresh one it replaced). */
  "session.resume": [Session, Session];
  "mapping.release": [Mapping, string];
  /**
   * A CreateMapping took another reference on an existing mapping ("add"), or a ReleaseMapping
   * gave one back without it ending ("drop"); Mapping.refs is the new count.
   */
  "mapping.refs": [Mapping, "add" | "drop"];
  /** CreateMapping failed: gRPC code name and the error's low-cardinality reason. */
  "mapping.refused": [string, string];
  /** An fd-channel request: result, the mapping (when known), ms, and the kernel-verified peer. */
  "fd.delivery": [string, Mapping | undefined, number, FdPeer | undefined];
  /** A reply carrying fds could not be sent: errno label (fdpass/delivery-failure.ts), the peer. */
  "fd.undeliverable": [string, FdPeer];
  /**
   * A connection refused before it got a session or a slot (quota, global cap, draining, not an
   * admin): which socket ("broker", "fd", "admin"), the kernel-verified peer, and a low-cardinality
   * reason such as "limit:sessions". Attackers repeat these, so the journal aggregates them.
   */
  "connection.refused": [string, FdPeer, string];
  denied: [Session | undefined, string, string];
  revocation: [string, number];
  /**
   * A delivered mapping was revoked (or its session ended) while its holder may still map it: it
   * is held (state "revoking"), its pages and quota stay booked until the holder releases it or
   * exits. Fires before the mapping's "mapping.release".
   */
  "mapping.hold": [Hold];
  /** A hold ended: "release" (the holder released it), "exit" (its process exited). */
  "mapping.unhold": [Hold, string];
  /**
   * brokerd enforced a revocation: SIGKILL through the holder's pidfd. result: "killed", "gone"
   * (it had exited), "error:<code>" (EPERM without CAP_KILL).
   */
  "mapping.revoke.enforced": [Hold[], string];
  "policy.reload": [boolean, string[]];
  /** A Kubernetes claim bound or unbound by an administrator (the node agent), and what that revoked. */
  claim: ["bind" | "unbind", ClaimRec, RevokeCounts];
  "device.health": [string, DeviceHealth];
}

/** An EventEmitter whose listeners cannot throw into the code that published the event. */
export class CoreEvents extends EventEmitter<BrokerEvents> {
  override emit<K extends keyof BrokerEvents>(name: K, ...args: BrokerEvents[K]): boolean {
    const listeners = this.rawListeners(name as string) as ((...a: unknown[]) => void)[];
    for (const f of listeners)
      try {
        f.apply(this, args);
      } catch (e) {
        logLimited(
          `event.${String(name)}`,
          `vfio-brokerd: a listener of ${String(name)} failed (the change stands): ${(e as Error)?.stack ?? e}`,
        );
      }
    return listeners.length > 0;
  }
}
