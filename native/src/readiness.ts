// readiness.ts: owns waiting for fds on the event loop through this thread's one epoll set
// (epoll.c) behind one Poller (poll.c). Every FdSocket and every exit watch waits here, so a
// waiting socket or process costs an epoll entry and a slot in one Map, not a uv_poll_t, a napi
// wrapper and closures of its own (10,000 idle sessions held 10,000 of each). The Poller keeps the
// process alive exactly while some watcher asks it to (ref/unref, counted); the set and the Poller
// are made on first use and closed once nothing is watched or pending (no fd held at rest). Level-triggered: a
// watcher is told on every turn of the loop while its fd is ready and armed. A watcher may be told
// of readiness that is gone by then (or, on an fd number reused within one turn, was another's),
// so it must treat an event as "look", never as a fact. Never reads, writes or closes a watched fd.
import { type Poller, raw } from "./binding.js";
import { ERRNO } from "./errors.js";

/** What is told of readiness: errno 0 and READABLE | WRITABLE, or an error (the fd is no longer watched). */
export const onReady: unique symbol = Symbol("onReady");

export interface Watcher {
  [onReady](errno: number, events: number): void;
}

const ADD = 1;
const DEL = 2;
const MOD = 3;
const FAILED = 4;
/** Ready fds read per epoll_wait (pairs of fd and events). */
const out = new Int32Array(128);

class Readiness {
  readonly #byFd = new Map<number, Watcher>();
  readonly #poller: Poller;
  #refs = 0;

  constructor() {
    this.#poller = new raw.Poller(raw.epollSet());
    this.#poller.onready = (errno) => this.#ready(errno);
    this.#poller.start(1);
    this.#poller.unref();
  }

  /** Watches fd for events (READABLE | WRITABLE) for w, or changes what it is watched for. */
  arm(fd: number, events: number, w: Watcher): void {
    const had = this.#byFd.get(fd);
    raw.epollControl(had ? MOD : ADD, fd, events);
    if (had !== w) this.#byFd.set(fd, w);
  }

  /** Whether some watcher waits on fd (armed and not disarmed). */
  watching(fd: number): boolean {
    return this.#byFd.has(fd);
  }

  /** Stops watching fd (idempotent); must come before fd is closed. */
  disarm(fd: number): void {
    if (this.#byFd.delete(fd)) raw.epollControl(DEL, fd, 0);
    this.#closeIfIdle();
  }

  /** One more watcher needs the process kept alive. */
  ref(): void {
    if (this.#refs++ === 0) this.#poller.ref();
  }

  unref(): void {
    if (--this.#refs === 0) this.#poller.unref();
    this.#closeIfIdle();
  }

  /** Nothing watched and nothing pending: the set and its Poller go (a process at rest holds neither). */
  #closeIfIdle(): void {
    if (this.#byFd.size !== 0 || this.#refs !== 0 || the !== this) return;
    the = null;
    this.#poller.close();
    raw.epollClose();
  }

  #ready(errno: number): void {
    if (errno !== 0) {
      // libuv stopped watching the set itself (never seen): watch it again, and let every watcher
      // look at its fd (a spurious readiness is harmless by contract).
      this.#poller.start(1);
      for (const w of [...this.#byFd.values()]) w[onReady](0, 3);
      return;
    }
    for (;;) {
      const n = raw.epollReady(out);
      for (let i = 0; i < n; i++) {
        const fd = out[2 * i]!;
        const events = out[2 * i + 1]!;
        const w = this.#byFd.get(fd);
        if (!w) continue;
        if (events & FAILED) {
          // As libuv does for a Poller: the error is reported once and the fd is no longer watched.
          this.disarm(fd);
          w[onReady](ERRNO.EBADF, 0);
        } else w[onReady](0, events);
        if (the !== this) return; // the last watcher went: the set is closed
      }
      if (n < out.length / 2) break;
    }
  }
}

let the: Readiness | null = null;

/** Whether some watcher of this thread waits on fd (never makes the set). */
export function watched(fd: number): boolean {
  return the?.watching(fd) ?? false;
}

/** This thread's readiness (made on first use; closed once nothing is watched or pending). */
export function readiness(): Readiness {
  the ??= new Readiness();
  return the;
}
