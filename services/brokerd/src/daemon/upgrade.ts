// upgrade.ts: offers a running brokerd to its successor (a planned upgrade, --take-over,
// restart/handover.ts): what freezing means here (no state written, every call refused
// "restarting", no fd-channel accept), what is handed over (the parked fds), what the old brokerd
// closes once the successor holds them, and how it serves again when the hand-over fails. It never
// takes over (daemon/inherit.ts) and builds nothing.

import { offerHandover } from "../restart/handover.js";
import { HANDOVER_SOCKET } from "./inherit.js";
import type { Parts } from "./parts.js";

/** Offered only once everything it hands over or closes (metrics included) exists. */
export function offerUpgrade(p: Parts, onHandedOver: () => void): { close(): Promise<void> } {
  const { broker, ledger, journal, store, fdChannel, run } = p;
  return offerHandover(
    p.places.private.at(HANDOVER_SOCKET),
    {
      collect: async () => {
        // From here the state is final: nothing is written, every call and delivery is refused
        // ("restarting"), so the successor restores exactly what clients were told.
        ledger.freeze();
        broker.frozen = true;
        broker.handover.hold();
        fdChannel.pauseAccepting();
        journal.write("handover.start", { pid: process.pid, run });
        return { fds: p.parked, meta: { pid: process.pid, run } };
      },
      done: async () => {
        p.life.handedOver = true;
        p.life.draining = true;
        await broker.close(true);
        // Calls held during the hand-over now find brokerd frozen: "restarting", resume there.
        broker.handover.release();
        p.brokerSocket.listening.dropAll();
        p.adminSocket.listening.dropAll();
        await p.metrics?.close();
        journal.close("handed over to the next brokerd (grants kept)");
        store.close();
        p.lock.release();
        p.places.close();
        // Exiting closes everything without unlinking a socket file the successor now serves.
        onHandedOver();
      },
      abort: (e) => {
        ledger.thaw();
        broker.frozen = false;
        broker.handover.release();
        fdChannel.resumeAccepting();
        journal.write("handover.aborted", { reason: e.message });
        console.error(`vfio-brokerd: ${e.message}; serving again`);
        // The successor could not start from the files: rewrite them from what this brokerd holds
        // (its model is every record it wrote), so that the next --take-over or restart can.
        if (/state store/.test(e.message)) rewriteStore(p);
      },
    },
    { shown: p.places.private.show(HANDOVER_SOCKET) },
  );
}

/** Rewrites the state store from memory (a fresh snapshot), after a successor refused it. */
function rewriteStore(p: Parts): void {
  try {
    p.store.compact();
    p.journal.write("state.rewritten", { why: "a successor refused the state store" });
    console.error(
      "vfio-brokerd: rewrote the state store from memory (a fresh snapshot); --take-over can be tried again",
    );
  } catch (c) {
    console.error(`vfio-brokerd: rewriting the state store failed: ${(c as Error).message}`);
  }
}
