// identity.ts: owns learning who a Unix socket peer is from the kernel (SO_PEERCRED, SO_PEERPIDFD,
// with the labelled pidfd_open fallback) and watching pidfds for exit (one epoll set). It never takes a pid from
// what a peer says. The fallback is weaker: between SO_PEERCRED and pidfd_open the peer may exit and
// its pid be reused, so its result is labelled pidfdSource "pidfd_open" for policy to weigh.
// VFIO_NATIVE_NO_PEERPIDFD=1 forces the fallback (tests; kernels without SO_PEERPIDFD take it anyway).
import { READABLE, raw } from "./binding.js";
import { onReady, readiness, type Watcher, watched } from "./readiness.js";

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface PeerIdentity extends PeerCred {
  pidfd: number;
  pidfdSource: "SO_PEERPIDFD" | "pidfd_open";
}

export interface Watch {
  close(): void;
}

/** SO_PEERCRED: the peer's pid, uid and gid as of connect() (or socketpair()). */
export function peerCred(fd: number): PeerCred {
  return raw.peerCred(fd);
}

/** SO_PEERPIDFD: a pidfd of the peer process, or null if the kernel lacks it. The caller closes it. */
export function peerPidfd(fd: number): number | null {
  if (process.env.VFIO_NATIVE_NO_PEERPIDFD === "1") {
    raw.peerCred(fd); // still validate fd and that it is a connected socket
    return null;
  }
  return raw.peerPidfd(fd);
}

/**
 * Credentials plus a pidfd: SO_PEERPIDFD where the kernel has it, else pidfd_open(pid) (weaker).
 * Built as one literal: on Node 20 `{ ...cred, more }` makes new hidden classes on every call
 * (~370 B of old space per connecting peer).
 */
export function peerIdentity(fd: number): PeerIdentity {
  const cred = raw.peerCred(fd);
  const kernelPidfd = peerPidfd(fd);
  return {
    uid: cred.uid,
    gid: cred.gid,
    pid: cred.pid,
    pidfd: kernelPidfd ?? raw.pidfdOpen(cred.pid),
    pidfdSource: kernelPidfd !== null ? "SO_PEERPIDFD" : "pidfd_open",
  };
}

/** pidfd_open(pid, 0). The pidfd is close-on-exec; the caller closes it. */
export function pidfdOpen(pid: number): number {
  return raw.pidfdOpen(pid);
}

/** true while the process lives (poll() with a zero timeout: a pidfd becomes readable on exit). */
export function pidfdAlive(pidfd: number): boolean {
  return raw.pidfdAlive(pidfd);
}

/**
 * pidfd_send_signal(pidfd, sig): signals the very process the pidfd refers to (never one that
 * reused its pid). false when it has already exited; throws on any other error (EPERM, EBADF).
 */
export function pidfdSendSignal(pidfd: number, sig: number): boolean {
  return raw.pidfdSendSignal(pidfd, sig);
}

/**
 * One exit watch, waiting in this thread's readiness set: on a private dup of the pidfd that it
 * closes (watchPidfd), or on its owner's pidfd itself, which it never closes (watchOwnPidfd).
 */
class PidWatch implements Watch, Watcher {
  #fd: number;

  constructor(
    fd: number,
    readonly onExit: (arg: unknown) => void,
    readonly arg: unknown,
    private readonly owned: boolean,
  ) {
    this.#fd = fd;
    readiness().arm(fd, READABLE, this);
  }

  [onReady](): void {
    if (this.#fd < 0 || raw.pidfdAlive(this.#fd)) return; // not for us, or not an exit after all
    this.close();
    this.onExit(this.arg);
  }

  close(): void {
    if (this.#fd < 0) return;
    readiness().disarm(this.#fd);
    if (this.owned) raw.closeFd(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Calls onExit(arg) once, from the event loop, when the process exits: a private dup of the pidfd
 * waits in this thread's readiness set (readiness.ts), so the caller may close its pidfd at any
 * time and several watches may share one pidfd. The watch never keeps the process alive. close()
 * is idempotent and cancels it. Pass a shared onExit and the watched thing as arg: the watch then holds no closure.
 */
export function watchPidfd<T = undefined>(pidfd: number, onExit: (arg: T) => void, arg?: T): Watch {
  if (typeof onExit !== "function") throw new TypeError("watchPidfd: onExit must be a function");
  const dup = raw.dupFd(pidfd);
  try {
    return new PidWatch(dup, onExit as (arg: unknown) => void, arg, true);
  } catch (err) {
    raw.closeFd(dup);
    throw err;
  }
}

/**
 * watchPidfd without the dup (no fd of its own), for an owner that keeps pidfd open for the whole
 * life of the watch: a session, whose pidfd is its identity pin and closed only when it ends. The
 * contract: close() the watch before closing pidfd (close() never closes it), and at most one such
 * watch per pidfd; a second one, or one on an fd number some other watcher still waits on (a pidfd
 * closed while watched, its number reused), throws instead of taking that watcher's place.
 * Other watches of the same process still take watchPidfd (a dup each).
 */
export function watchOwnPidfd<T = undefined>(pidfd: number, onExit: (arg: T) => void, arg?: T): Watch {
  if (typeof onExit !== "function") throw new TypeError("watchOwnPidfd: onExit must be a function");
  if (watched(pidfd))
    throw new Error(`watchOwnPidfd: fd ${pidfd} is already watched (one watch per pidfd; close it first)`);
  return new PidWatch(pidfd, onExit as (arg: unknown) => void, arg, false);
}
