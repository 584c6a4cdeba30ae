// inherit.ts: owns the fds a start inherits instead of opening afresh: the listening sockets and
// VFIO fds of the brokerd this one replaces (--take-over: once confirm() resolves it has exited,
// freeing its lock, store and metrics port) or of systemd's fdstore (LISTEN_FDS), by name. Every
// inherited fd is owned here until a part takes it by name; those left are closed by the start's
// unwinding, or as names this brokerd does not serve. It never binds or serves anything.
import { closeFd, PAGE_SIZE } from "@vfio-broker/native";
import type { Config } from "../config.js";
import type { Places } from "../places.js";
import { takeListenFds } from "../restart/fdstore.js";
import { HandoverError, takeOver } from "../restart/handover.js";
import { currentBootId } from "../state/store.js";
import { validateStore } from "../state/validate.js";
import type { Unwind } from "./unwind.js";

/** The planned-upgrade socket in the private dir (root only, restart/handover.ts). */
export const HANDOVER_SOCKET = "handover.sock";

export interface Inherited {
  /** Inherited fds by name, until a part owns one (taken()). */
  fds: Map<string, number>;
  /** Every name inherited (for the journal). */
  names: string[];
  /** The pid of the brokerd taken over from (0: none). */
  predecessor: number;
  /** name's fd is a part's from now on (it closes it): out of the inherited set. */
  taken(name: string): void;
  /** Closes the fds no part took (names this brokerd does not serve). */
  closeRest(): void;
}

function inherited(fds: Map<string, number>, predecessor: number): Inherited {
  const closeRest = () => {
    for (const fd of fds.values()) closeFd(fd);
    fds.clear();
  };
  return {
    fds,
    names: [...fds.keys()],
    predecessor,
    taken(name) {
      fds.delete(name);
    },
    closeRest,
  };
}

/**
 * The fds this start inherits: taken over from the brokerd running (config.takeOver) or from
 * systemd (LISTEN_FDS). Registered with unwind at once, so a failed start closes the ones no part
 * took.
 */
export async function inheritFds(config: Config, places: Places, unwind: Unwind): Promise<Inherited> {
  if (!config.takeOver) {
    const got = inherited(new Map(takeListenFds().map((f) => [f.name, f.fd])), 0);
    unwind.add("the inherited fds", () => got.closeRest());
    return got;
  }
  const t = await takeOver(places.private.at(HANDOVER_SOCKET), 30_000, places.private.show(HANDOVER_SOCKET));
  // The old brokerd is frozen now, its store final: it lets go only if this one can start from
  // that store. If not, it thaws and keeps serving, and both say why.
  try {
    validateStore(config.stateDir, currentBootId(), BigInt(PAGE_SIZE));
  } catch (e) {
    const why = (e as Error).message;
    await t.abandon(`its check of the state store failed: ${why}`);
    throw new HandoverError(
      `not taking over: ${why} The brokerd running (pid ${t.oldPid}) keeps serving.`,
      "EABORTED",
      { cause: e },
    );
  }
  const got = inherited(new Map(t.fds.map((f) => [f.name, f.fd])), t.oldPid);
  unwind.add("the inherited fds", () => got.closeRest());
  await t.confirm();
  return got;
}
