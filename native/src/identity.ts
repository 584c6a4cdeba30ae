// identity.ts: owns learning who a Unix socket peer is from the kernel (SO_PEERCRED, SO_PEERPIDFD,
// with the labelled pidfd_open fallback) and watching pidfds for exit (one epoll set). It never takes a pid from
// what a peer says. The fallback is weaker: between SO_PEERCRED and pidfd_open the peer may exit and
// its pid be reused, so its result is labelled pidfdSource "pidfd_open" for policy to weigh.
// VFIO_NATIVE_NO_PEERPIDFD=1 forces the fallback (tests; kernels without SO_PEERPIDFD take it anyway).
import { type Poller, READABLE, raw } from "./binding.js";

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

/** Credentials plus a pidfd: SO_PEERPIDFD where the kernel has it, else pidfd_open(pid) (weaker). */
export function peerIdentity(fd: number): PeerIdentity {
  const cred = raw.peerCred(fd);
  const pidfd = peerPidfd(fd);
  if (pidfd !== null) return { ...cred, pidfd, pidfdSource: "SO_PEERPIDFD" };
  return { ...cred, pidfd: raw.pidfdOpen(cred.pid), pidfdSource: "pidfd_open" };
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
 * Every exit watch of this thread: one epoll set of private pidfd dups (epoll.c) behind one unref'd
 * Poller, so a watched process costs a dup, an epoll entry and a small object, not a uv_poll_t, a
 * wrapper and closures of its own. Made with the first watch and closed with the last.
 */
class ExitWatches {
  readonly set: number;
  readonly poller: Poller;
  readonly byFd = new Map<number, PidWatch>();

  constructor() {
    this.set = raw.epollCreate();
    try {
      this.poller = new raw.Poller(this.set);
    } catch (err) {
      raw.closeFd(this.set);
      throw err;
    }
    this.poller.onready = (errno) => this.ready(errno);
    this.poller.start(READABLE);
    this.poller.unref();
  }

  /** Some watched processes exited: each watch is closed, then told (in the order the kernel said). */
  private ready(errno: number): void {
    let exited: PidWatch[];
    if (errno !== 0) {
      // libuv stopped watching the set: ask each process, then watch again.
      exited = [...this.byFd.values()].filter((w) => !raw.pidfdAlive(w.fd));
      if (this.byFd.size > exited.length) this.poller.start(READABLE);
    } else {
      exited = [];
      for (;;) {
        const n = raw.epollReady(this.set, readyOut);
        for (let i = 0; i < n; i++) {
          const w = this.byFd.get(readyOut[i]!);
          if (w) exited.push(w);
        }
        if (n < readyOut.length) break;
      }
    }
    for (const w of exited) w.close();
    for (const w of exited) {
      try {
        w.onExit(w.arg);
      } catch (err) {
        queueMicrotask(() => {
          throw err; // as uncaught as it was, without skipping the other watches
        });
      }
    }
  }

  close(): void {
    this.poller.close();
    raw.closeFd(this.set);
  }
}

const readyOut = new Int32Array(64);
let watches: ExitWatches | null = null;

class PidWatch implements Watch {
  constructor(
    readonly fd: number,
    readonly onExit: (arg: unknown) => void,
    readonly arg: unknown,
  ) {}

  close(): void {
    const all = watches;
    if (all?.byFd.get(this.fd) !== this) return;
    all.byFd.delete(this.fd);
    raw.epollDelete(all.set, this.fd);
    raw.closeFd(this.fd);
    if (all.byFd.size === 0) {
      watches = null;
      all.close();
    }
  }
}

/**
 * Calls onExit(arg) once, from the event loop, when the process exits (a private dup of the pidfd
 * in this thread's one epoll set, so the caller may close its pidfd at any time and several watches
 * may share one pidfd). The watch never keeps the process alive. close() is idempotent and
 * cancels it. Pass a shared onExit and the watched thing as arg: the watch then holds no closure.
 */
export function watchPidfd<T = undefined>(pidfd: number, onExit: (arg: T) => void, arg?: T): Watch {
  if (typeof onExit !== "function") throw new TypeError("watchPidfd: onExit must be a function");
  const dup = raw.dupFd(pidfd);
  try {
    watches ??= new ExitWatches();
    raw.epollAdd(watches.set, dup);
  } catch (err) {
    raw.closeFd(dup);
    if (watches?.byFd.size === 0) {
      watches.close();
      watches = null;
    }
    throw err;
  }
  const w = new PidWatch(dup, onExit as (arg: unknown) => void, arg);
  watches.byFd.set(dup, w);
  return w;
}
