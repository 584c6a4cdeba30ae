// handover.ts: owns the planned-upgrade hand-over of named fds from a running (old) brokerd to its
// replacement on the same host, for hosts without systemd's fdstore. Closing the fds clients depend
// on (VFIO device/group/container fds, BAR memfds, listening sockets) would reset devices and drop
// clients, so the new brokerd takes a copy of every one over a Unix socket (SCM_RIGHTS) before the
// old exits, like HAProxy's seamless reload. A listening socket handed over keeps its backlog:
// clients that connect while neither process accepts wait, they are not refused.
//
// Protocol, framed JSON over FdSocket (fds travel with the frames, at most 253 per frame):
//   taker -> old   {op:"take", version:1, pid}
//   old            collect(): freezes (stops accepting and writing state), returns fds + meta
//   old -> taker   {op:"fds", names, meta, total} {op:"fds", names}... {op:"end", count}
//   taker -> old   {op:"taken"}                     (it holds every fd and will serve)
//              or  {op:"abandon", reason}           (it will not serve, e.g. the state store is
//                                                    damaged: the old one thaws and serves again)
//   old            done(): releases its lock, closes client connections (may exit the process)
//   old -> taker   {op:"released"}, then closes     (or simply exits inside done())
// Refusals are {op:"refused", reason}; after collect() any failure on the old side is
// {op:"aborted", reason} and abort() makes the old brokerd serve again with its fds intact.
// Both ends check SO_PEERCRED: the peer must run as our own euid (the socket is also mode 0600).
// The taker must not serve until confirm() resolves: before that, the old one may still resume.
import {
  closeFd,
  FdServer,
  FdSocket,
  MAX_FDS_PER_MESSAGE,
  type NativeError,
  type PeerCred,
  peerCred,
  pidfdAlive,
  watchPidfd,
} from "@vfio-broker/native";
import type { NamedFd } from "./fdstore.js";

export const HANDOVER_VERSION = 1;
/** Bound on one frame (the first carries meta): a larger one is a protocol violation. */
export const MAX_HANDOVER_FRAME = 16 * 1024 * 1024;
/** How long a connected taker has to say "take" before the old side drops it. */
const TAKE_WAIT_MS = 10_000;
/** Connections that have not said "take" yet; more are refused (they cost an fd and a timer each). */
const MAX_WAITING = 16;
const DEFAULT_OLD_TIMEOUT_MS = 30_000;
const SMALL_FRAME = 64 * 1024;

export type HandoverErrorCode =
  | "ENOBROKER" // nothing to take over from at the path
  | "EPERM" // the peer runs as another uid
  | "EREFUSED" // the old side said no (busy, version, uid)
  | "ETIMEDOUT"
  | "EPROTO" // a frame the protocol does not allow
  | "EABORTED"; // the old side gave up after freezing and serves again

export class HandoverError extends Error {
  override readonly name = "HandoverError";
  constructor(
    message: string,
    readonly code: HandoverErrorCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface HandoverHooks {
  /** Freeze (stop accepting, stop writing state) and list every fd to hand over, plus state to pass. */
  collect(): Promise<{ fds: NamedFd[]; meta: unknown }>;
  /** The taker holds every fd: release the lock, close client connections. May exit the process. */
  done(): Promise<void> | void;
  /** collect() ran but the hand-over failed (taker gone, timeout, done() threw): serve again. */
  abort(reason: Error): Promise<void> | void;
  /** A taker was turned away (journal it). */
  refused?(reason: string, peer: PeerCred): void;
}

export interface TakenOver {
  fds: NamedFd[];
  meta: unknown;
  /** From SO_PEERCRED, not from anything the old side said. */
  oldPid: number;
  /** Sends "taken"; resolves once the old brokerd has finished done() and closed (or exited). */
  confirm(): Promise<void>;
  /**
   * Instead of confirm(): the taker will not serve (why: reason). Closes every fd taken; the old
   * brokerd aborts the hand-over and serves again, and says why. Resolves once that is sent.
   */
  abandon(reason: string): Promise<void>;
}

type Frame = { op: string } & Record<string, unknown>;

function encode(frame: Frame): Buffer {
  return Buffer.from(JSON.stringify(frame));
}

function decode(data: Buffer): Frame {
  let v: unknown;
  try {
    v = JSON.parse(data.toString("utf8"));
  } catch {
    throw new HandoverError(`hand-over protocol: a frame is not JSON (${data.length} bytes)`, "EPROTO");
  }
  if (typeof v !== "object" || v === null || typeof (v as Frame).op !== "string")
    throw new HandoverError("hand-over protocol: a frame has no op", "EPROTO");
  return v as Frame;
}

function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
}

/**
 * A deadline for one phase: on expiry the socket is closed, which fails whatever is pending on it,
 * and error() says why (so the caller reports the timeout, not the ECLOSED it caused).
 */
function deadline(sock: FdSocket, ms: number, what: string): { clear(): void; error(): Error | undefined } {
  let expired: Error | undefined;
  const timer = setTimeout(() => {
    expired = new HandoverError(`hand-over timed out after ${ms} ms waiting for ${what}`, "ETIMEDOUT");
    sock.close();
  }, ms);
  return { clear: () => clearTimeout(timer), error: () => expired };
}

// ---------------------------------------------------------------------------------------- old side

/**
 * Offers this brokerd's fds to a successor at `path` (a Unix socket, mode 0600; a stale socket file
 * is replaced, a live one refused). One taker at a time, and only one running as our euid. After a
 * completed hand-over it closes the socket and refuses further takers. close() stops offering; a
 * hand-over in progress is aborted (abort() runs if collect() did).
 */
export function offerHandover(
  path: string,
  hooks: HandoverHooks,
  opts: { timeoutMs?: number; shown?: string } = {},
): { close(): Promise<void> } {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_OLD_TIMEOUT_MS;
  const shown = opts.shown ?? path;
  const euid = process.geteuid!();
  let server: FdServer;
  try {
    server = FdServer.listen(path, { mode: 0o600 });
  } catch (err) {
    if ((err as NativeError).code === "EADDRINUSE")
      throw new HandoverError(
        `another process is already offering a hand-over at ${shown} (is another brokerd being upgraded?)`,
        "EREFUSED",
        { cause: err },
      );
    throw err;
  }
  // Only a taker that has sent a valid take holds the slot: a connection that never speaks (e.g.
  // the liveness probe of a second offerHandover) must not block the real successor.
  let active: { sock: FdSocket; pid: number; settled: Promise<void> } | null = null;
  const waiting = new Set<FdSocket>();
  let closed = false;

  const refuse = (sock: FdSocket, reason: string, peer: PeerCred): void => {
    hooks.refused?.(reason, peer);
    sock
      .send(encode({ op: "refused", reason }))
      .catch(() => {})
      .finally(() => sock.close());
  };

  server.onConnection((sock) => {
    let peer: PeerCred;
    try {
      peer = peerCred(sock.fd);
    } catch {
      sock.close();
      return;
    }
    if (peer.uid !== euid)
      return refuse(sock, `uid ${peer.uid} may not take over this brokerd (it runs as uid ${euid})`, peer);
    if (closed) return refuse(sock, "this brokerd no longer offers a hand-over", peer);
    if (waiting.size >= MAX_WAITING) return refuse(sock, "too many connections waiting to take over", peer);
    void greet(sock, peer);
  });

  async function greet(sock: FdSocket, peer: PeerCred): Promise<void> {
    waiting.add(sock);
    const first = deadline(sock, TAKE_WAIT_MS, `pid ${peer.pid} to send {op:"take"}`);
    let take: Frame;
    try {
      const m = await sock.recv({ maxBytes: SMALL_FRAME, maxFds: 0, keepOpenOnError: true });
      if (!m) return sock.close();
      take = decode(m.data);
    } catch (err) {
      return refuse(sock, (first.error() ?? (err as Error)).message, peer);
    } finally {
      first.clear();
      waiting.delete(sock);
    }
    if (take.op !== "take")
      return refuse(sock, `expected {op:"take"}, got op ${JSON.stringify(take.op)}`, peer);
    if (take.version !== HANDOVER_VERSION)
      return refuse(
        sock,
        `hand-over protocol version ${JSON.stringify(take.version)} is not supported (this brokerd speaks ${HANDOVER_VERSION})`,
        peer,
      );
    if (take.pid !== peer.pid)
      return refuse(
        sock,
        `the take names pid ${JSON.stringify(take.pid)}, but the peer is pid ${peer.pid}`,
        peer,
      );
    if (closed) return refuse(sock, "this brokerd no longer offers a hand-over", peer);
    if (active) return refuse(sock, `a hand-over to pid ${active.pid} is already in progress`, peer);
    const settled = transfer(sock, peer).finally(() => {
      active = null;
    });
    active = { sock, pid: peer.pid, settled };
  }

  async function transfer(sock: FdSocket, peer: PeerCred): Promise<void> {
    // From here on the old brokerd is frozen until done() or abort().
    let timer: ReturnType<typeof deadline> | undefined;
    let committed = false;
    try {
      const { fds, meta } = await hooks.collect();
      timer = deadline(sock, timeoutMs, `pid ${peer.pid} to take ${fds.length} fds and confirm`);
      for (const f of fds)
        if (typeof f?.name !== "string" || !Number.isInteger(f.fd) || f.fd < 0)
          throw new Error(`collect() returned an invalid entry ${JSON.stringify(f)}`);
      for (let i = 0; i === 0 || i < fds.length; i += MAX_FDS_PER_MESSAGE) {
        const batch = fds.slice(i, i + MAX_FDS_PER_MESSAGE);
        const head = i === 0 ? { meta: meta ?? null, total: fds.length } : {};
        const frame = encode({ op: "fds", names: batch.map((f) => f.name), ...head });
        if (frame.length > MAX_HANDOVER_FRAME)
          throw new Error(
            `the hand-over frame is ${frame.length} bytes; at most ${MAX_HANDOVER_FRAME} (meta too large?)`,
          );
        await sock.send(
          frame,
          batch.map((f) => f.fd),
        );
      }
      await sock.send(encode({ op: "end", count: fds.length }));
      const reply = await sock.recv({ maxBytes: SMALL_FRAME, maxFds: 0 });
      if (!reply) throw new Error(`pid ${peer.pid} closed the connection before confirming it holds the fds`);
      const r = decode(reply.data);
      if (r.op === "abandon")
        throw new HandoverError(
          `pid ${peer.pid} will not serve: ${String(r.reason).slice(0, 2000)}`,
          "EABORTED",
        );
      if (r.op !== "taken")
        throw new HandoverError(`expected {op:"taken"}, got op ${JSON.stringify(r.op)}`, "EPROTO");
      timer.clear();
      committed = true; // new takers are refused as "in progress" until the listener closes
      await hooks.done();
      await sock.send(encode({ op: "released" })).catch(() => {});
      sock.close();
      server.close();
    } catch (err) {
      timer?.clear();
      const reason = timer?.error() ?? (err instanceof Error ? err : new Error(String(err)));
      const why = committed ? `done() failed: ${reason.message}` : reason.message;
      await sock.send(encode({ op: "aborted", reason: why })).catch(() => {});
      sock.close();
      try {
        await hooks.abort(
          new HandoverError(`hand-over to pid ${peer.pid} aborted: ${why}`, "EABORTED", { cause: reason }),
        );
      } catch (abortErr) {
        process.emitWarning(`hand-over: abort() failed: ${(abortErr as Error).message}`);
      }
    }
  }

  return {
    async close() {
      closed = true;
      server.close();
      for (const sock of waiting) sock.close();
      if (active) {
        active.sock.close();
        await active.settled;
      }
    },
  };
}

// ---------------------------------------------------------------------------------------- new side

/**
 * Takes every fd over from the brokerd offering at `path`. Resolves holding them (the caller owns
 * and closes them); rejects with a HandoverError (ENOBROKER, EPERM, EREFUSED, ETIMEDOUT, EPROTO)
 * having closed anything received. `timeoutMs` bounds the whole take and, separately, confirm().
 * `shown` is the path to name in messages (default path).
 */
export async function takeOver(path: string, timeoutMs: number, shown = path): Promise<TakenOver> {
  const euid = process.geteuid!();
  let sock: FdSocket;
  try {
    sock = await FdSocket.connect(path);
  } catch (err) {
    const code = (err as NativeError).code;
    if (code === "ENOENT" || code === "ECONNREFUSED")
      throw new HandoverError(
        `no brokerd to take over from at ${shown} (${code}): is the old brokerd running, and with this hand-over path?`,
        "ENOBROKER",
        { cause: err },
      );
    throw err;
  }
  const timer = deadline(sock, timeoutMs, `the old brokerd at ${shown} to hand over its fds`);
  const received: NamedFd[] = [];
  let pidfd = -1;
  let oldPid = 0;
  let meta: unknown = null;
  try {
    const peer = sock.peerIdentity();
    pidfd = peer.pidfd;
    oldPid = peer.pid;
    if (peer.uid !== euid)
      throw new HandoverError(
        `refusing to take over from pid ${peer.pid} at ${shown}: it runs as uid ${peer.uid}, this brokerd as uid ${euid}`,
        "EPERM",
      );
    await sock.send(encode({ op: "take", version: HANDOVER_VERSION, pid: process.pid }));
    let total = -1;
    for (;;) {
      const m = await sock.recv({ maxBytes: MAX_HANDOVER_FRAME, maxFds: MAX_FDS_PER_MESSAGE });
      if (!m)
        throw new HandoverError(
          `the old brokerd (pid ${oldPid}) closed the connection after ${received.length} fds, before {op:"end"}`,
          "EPROTO",
        );
      let f: Frame;
      try {
        f = decode(m.data);
        if (f.op === "fds") {
          const names = f.names;
          if (
            !Array.isArray(names) ||
            names.some((n) => typeof n !== "string") ||
            names.length !== m.fds.length
          )
            throw new HandoverError(
              `hand-over protocol: an fds frame names ${Array.isArray(names) ? names.length : "no"} fds but carries ${m.fds.length}`,
              "EPROTO",
            );
          if (total < 0) {
            if (!Number.isInteger(f.total) || (f.total as number) < 0)
              throw new HandoverError("hand-over protocol: the first fds frame has no total", "EPROTO");
            total = f.total as number;
            meta = f.meta ?? null;
          }
          if (received.length + names.length > total)
            throw new HandoverError(`hand-over protocol: more fds than the ${total} announced`, "EPROTO");
        } else if (m.fds.length > 0) {
          throw new HandoverError(
            `hand-over protocol: fds arrived with op ${JSON.stringify(f.op)}`,
            "EPROTO",
          );
        }
      } catch (err) {
        closeAll(m.fds);
        throw err;
      }
      if (f.op === "fds") {
        (f.names as string[]).forEach((name, i) => {
          received.push({ name, fd: m.fds[i]! });
        });
        continue;
      }
      if (f.op === "end") {
        if (total < 0 || f.count !== total || received.length !== total)
          throw new HandoverError(
            `hand-over protocol: end says ${JSON.stringify(f.count)} fds, announced ${total}, received ${received.length}`,
            "EPROTO",
          );
        break;
      }
      if (f.op === "refused")
        throw new HandoverError(
          `the old brokerd (pid ${oldPid}) refused the hand-over: ${String(f.reason)}`,
          "EREFUSED",
        );
      if (f.op === "aborted")
        throw new HandoverError(
          `the old brokerd (pid ${oldPid}) aborted the hand-over and serves again: ${String(f.reason)}`,
          "EABORTED",
        );
      throw new HandoverError(`hand-over protocol: unexpected op ${JSON.stringify(f.op)}`, "EPROTO");
    }
  } catch (err) {
    timer.clear();
    sock.close();
    closeAll(received.map((f) => f.fd));
    if (pidfd >= 0) closeAll([pidfd]);
    throw timer.error() ?? err;
  }
  timer.clear();

  let confirming: Promise<void> | undefined;
  const confirm = async (): Promise<void> => {
    const start = Date.now();
    const t = deadline(sock, timeoutMs, `the old brokerd (pid ${oldPid}) to finish done() and close`);
    try {
      let released = false;
      try {
        await sock.send(encode({ op: "taken" }));
        for (;;) {
          const m = await sock.recv({ maxBytes: SMALL_FRAME, maxFds: 0 });
          if (!m) break;
          const f = decode(m.data);
          if (f.op === "released") released = true;
          else if (f.op === "aborted")
            throw new HandoverError(
              `the old brokerd (pid ${oldPid}) aborted the hand-over after all and serves again: ${String(f.reason)}; ` +
                "close the fds taken and do not serve",
              "EABORTED",
            );
          else throw new HandoverError(`hand-over protocol: unexpected op ${JSON.stringify(f.op)}`, "EPROTO");
        }
      } catch (err) {
        // A reset or failed send means the old side is gone or going; its exit settles it below.
        if (t.error() || err instanceof HandoverError) throw t.error() ?? err;
      }
      if (!released && !(await exited(pidfd, timeoutMs - (Date.now() - start))))
        throw new HandoverError(
          `the old brokerd (pid ${oldPid}) closed the hand-over without releasing and is still running`,
          "EPROTO",
        );
    } finally {
      t.clear();
      sock.close();
      closeAll([pidfd]);
    }
  };
  const abandon = async (reason: string): Promise<void> => {
    closeAll(received.map((f) => f.fd));
    try {
      await sock.send(encode({ op: "abandon", reason }));
    } catch {
      // the old side is gone already: its own timeout or the closed socket makes it serve again
    } finally {
      sock.close();
      closeAll([pidfd]);
    }
  };
  return {
    fds: received,
    meta,
    oldPid,
    confirm: () => {
      confirming ??= confirm();
      return confirming;
    },
    abandon: (reason) => {
      confirming ??= abandon(reason);
      return confirming;
    },
  };
}

/**
 * true once the process behind pidfd has exited, false if it still runs after ms. Its socket
 * closes during exit, a moment before the pidfd says so, hence the wait.
 */
function exited(pidfd: number, ms: number): Promise<boolean> {
  if (!pidfdAlive(pidfd)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(
      () => {
        watch.close();
        resolve(false);
      },
      Math.max(ms, 0),
    );
    const watch = watchPidfd(pidfd, () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}
