// validate.ts: owns the check a successor makes of the state store before the brokerd it replaces
// lets go (--take-over, restart/handover.ts): the store must be one this brokerd will start from.
// It reads and replays the files exactly as StateStore.open() does, and re-books every mapping
// restoreState() would keep (sessions whose process still lives; delivered mappings, and pending
// ones whose ticket is still valid) in scratch attribute maps, so a store that open() or
// restoreState() would refuse is refused here (and one whose conflicting mappings are on a device
// brokerd no longer serves, which restoreState() would drop: recorded conflicts are damage). It writes nothing, takes no lock, opens no backing
// and keeps no fd (a pidfd opened to tell whether a process lives is closed at once).
import { statSync } from "node:fs";
import { closeFd } from "@vfio-broker/native";
import { AttributeMap } from "../grants/attribute-map.js";
import { openIfSameProcess } from "./restore.js";
import { StateError, StateStore } from "./store.js";

export interface StoreCheck {
  sessions: number;
  /** Of those, with a live process (restored detached at start). */
  live: number;
  /** Mappings re-booked without conflict. */
  mappings: number;
}

/**
 * Throws StateError (with what the operator can do) if the store in dir would stop brokerd's
 * start; else says what it holds. bootId: a store of another boot is set aside at start, so it
 * cannot stop one.
 */
export function validateStore(dir: string, bootId: string, pageSize: bigint, now = Date.now()): StoreCheck {
  let uid: number;
  try {
    uid = statSync(dir).uid;
  } catch {
    return { sessions: 0, live: 0, mappings: 0 }; // no store yet: a fresh one is made
  }
  if (process.getuid && uid !== process.getuid())
    throw new StateError(
      dir,
      `the directory belongs to uid ${uid}, not to brokerd's uid ${process.getuid()}`,
    );
  const { model } = StateStore.replay(dir);
  if (model.bootId !== "" && model.bootId !== bootId) return { sessions: 0, live: 0, mappings: 0 };
  const maps = new Map<string, AttributeMap>();
  let live = 0;
  let mappings = 0;
  for (const s of model.sessions.values()) {
    const proc = openIfSameProcess(s.pid, s.startTime);
    if ("why" in proc) continue; // released at start: its bookings do not count
    closeFd(proc.pidfd);
    live++;
    for (const d of model.deviceFilesOf(s.id))
      for (const m of model.mappingsOf(d.id)) {
        if (m.state === "pending" && (now >= m.expiresAt || m.ticket === "")) continue;
        let map = maps.get(d.device);
        if (!map) {
          map = new AttributeMap(d.device, pageSize);
          maps.set(d.device, map);
        }
        const offset = BigInt(m.offset);
        const length = BigInt(m.length);
        try {
          map.check(m.region, `region ${m.region}`, offset, length, m.effective);
        } catch (e) {
          throw new StateError(
            dir,
            `mapping ${m.df}/${m.cookie} conflicts with another recorded one (${(e as Error).message})`,
          );
        }
        map.acquire(m.region, offset, length, m.effective);
        mappings++;
      }
  }
  return { sessions: model.sessions.size, live, mappings };
}
