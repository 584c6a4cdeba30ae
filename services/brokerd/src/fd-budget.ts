// The fd budget: brokerd must never run out of file descriptors because of what clients do, or an
// operator could not get in to revoke the client that did it. Every client-driven fd has a cap
// (sessions: SESSION_FDS each; fd-channel connections; pending mappings: one backing fd each;
// refused connections kept to answer with the reason), and the caps must fit under
// RLIMIT_NOFILE with a reserve left for the admin socket, /metrics, the journal, policy reloads,
// backends' device fds and Node itself. Pure: the caller reads the limit.
import { readFileSync } from "node:fs";

/** Fds never given to clients: admin connections (2 each), metrics, journal, device fds, Node. */
export const RESERVE_FDS = 512;
/**
 * What one session holds: its socket and its pidfd (SO_PEERPIDFD or pidfd_open), which its exit
 * watch waits on itself (native watchOwnPidfd: no dup; the session closes the watch before the
 * pidfd, and a second watch on a still-watched fd number throws).
 */
export const SESSION_FDS = 2;
/** Refused broker.sock connections kept for a moment to say why (see rpc/server.ts). */
export const REFUSED_LINGER_FDS = 64;
/**
 * Fds of fd-channel replies brokerd holds because the client's socket buffer is full (private
 * dups until the send completes), over all connections (fdpass/transport.ts): past it the reply is
 * dropped. A connection is not read from while its unread replies take 64 KiB, so a send blocks
 * only if the send buffer is smaller than that (net.core.wmem_default lowered).
 */
export const HELD_REPLY_FDS = 256;
/** The fixed terms of the client budget (not scaled with the caps). */
const FIXED_FDS = REFUSED_LINGER_FDS + HELD_REPLY_FDS;

export interface ClientCaps {
  sessions: number;
  fdConnections: number;
  pendingMappings: number;
}

export interface FdBudget {
  caps: ClientCaps;
  /** How many fds clients can make brokerd hold at most, with these caps. */
  clientFds: number;
  /** Set when the caps had to be lowered to fit; says what and why. */
  warning: string;
}

/** Fds the client caps can cost at most. */
export function clientFds(c: ClientCaps): number {
  return SESSION_FDS * c.sessions + FIXED_FDS + c.fdConnections + c.pendingMappings;
}

/** Fits the wanted caps under nofile, keeping RESERVE_FDS; scales all three down alike if needed. */
export function planFdBudget(nofile: number, want: ClientCaps): FdBudget {
  const room = nofile - RESERVE_FDS - FIXED_FDS;
  const need = clientFds(want) - FIXED_FDS;
  if (need <= room) return { caps: { ...want }, clientFds: clientFds(want), warning: "" };
  const f = Math.max(room, 0) / need;
  const caps = {
    sessions: Math.max(1, Math.floor(want.sessions * f)),
    fdConnections: Math.max(1, Math.floor(want.fdConnections * f)),
    pendingMappings: Math.max(1, Math.floor(want.pendingMappings * f)),
  };
  // The floor of 1 each can overshoot by a few fds: take them from the largest cap.
  const over = clientFds(caps) + RESERVE_FDS - nofile;
  if (over > 0) {
    const fds = (k: keyof ClientCaps) => (k === "sessions" ? SESSION_FDS : 1);
    const k = (["pendingMappings", "fdConnections", "sessions"] as const).reduce((a, b) =>
      caps[a] * fds(a) >= caps[b] * fds(b) ? a : b,
    );
    caps[k] = Math.max(1, caps[k] - Math.ceil(over / fds(k)));
  }
  return {
    caps,
    clientFds: clientFds(caps),
    warning:
      `RLIMIT_NOFILE is ${nofile}: lowered the caps to ${caps.sessions} sessions, ${caps.fdConnections} fd-channel ` +
      `connections and ${caps.pendingMappings} pending mappings (from ${want.sessions}, ${want.fdConnections}, ` +
      `${want.pendingMappings}) to keep ${RESERVE_FDS} fds for operators; raise LimitNOFILE= to serve more`,
  };
}

/** The soft RLIMIT_NOFILE of this process (Node raises it to the hard limit at start). */
export function nofileLimit(): number {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = line?.split(/\s{2,}/)[1];
    const n = Number(soft);
    return Number.isInteger(n) && n > 0 ? n : 1024;
  } catch {
    return 1024;
  }
}
