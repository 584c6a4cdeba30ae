// Starts brokerd: composes it (daemon/compose.ts: backends, policy, the Broker core, the gRPC
// servers on the broker and admin sockets, the fd channel, metrics and the journal, in dependency
// order) and, when any step fails, closes everything the start opened, last first
// (daemon/unwind.ts), before the error reaches the caller. main.ts adds process concerns (signals,
// sd_notify); tests and tools can start a daemon in-process with startDaemon().
import type { Config } from "./config.js";
import { compose } from "./daemon/compose.js";
import type { Daemon, DaemonExtras } from "./daemon/parts.js";
import { Unwind } from "./daemon/unwind.js";

export { fdSocketName } from "./daemon/core.js";
export { HANDOVER_SOCKET } from "./daemon/inherit.js";
export type { Daemon, DaemonExtras } from "./daemon/parts.js";

/**
 * Starts a daemon. Rejects with what stopped the start (StateError, UnsafePlaceError, a socket
 * another server accepts on, ...) only once every part it opened is closed again: the runtime lock
 * is free, no socket file it bound is left, no fd it opened stays open.
 */
export async function startDaemon(config: Config, extras: DaemonExtras = {}): Promise<Daemon> {
  const unwind = new Unwind();
  try {
    const daemon = await compose(config, extras, unwind);
    unwind.done();
    return daemon;
  } catch (e) {
    await unwind.run(e);
    throw e;
  }
}
