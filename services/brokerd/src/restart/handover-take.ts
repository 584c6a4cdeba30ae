// handover-take.ts: owns the new side of the planned-upgrade hand-over (restart/handover.ts): it
// connects to the old brokerd, checks that it runs as our euid, receives every fd it hands over,
// and then either confirms (the old one releases and exits) or abandons (the old one serves
// again). It never offers fds itself (handover-offer.ts). The taker must not serve until confirm()
// resolves: before that, the old one may still resume.
import {
  type FdMessage,
  FdSocket,
  MAX_FDS_PER_MESSAGE,
  type NativeError,
  pidfdAlive,
  watchPidfd,
} from "@vfio-broker/native";
import type { NamedFd } from "./fdstore.js";
import {
  closeAll,
  deadline,
  decode,
  encode,
  type Frame,
  HANDOVER_VERSION,
  HandoverError,
  MAX_HANDOVER_FRAME,
  SMALL_FRAME,
} from "./handover-wire.js";

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

/** One take in progress: the connection, the old brokerd's pidfd, and what it sent so far. */
interface Take {
  sock: FdSocket;
  timeoutMs: number;
  pidfd: number;
  oldPid: number;
  /** The fd count the first fds frame announced (-1: none arrived yet). */
  total: number;
  meta: unknown;
  received: NamedFd[];
}

/**
 * Takes every fd over from the brokerd offering at `path`. Resolves holding them (the caller owns
 * and closes them); rejects with a HandoverError (ENOBROKER, EPERM, EREFUSED, ETIMEDOUT, EPROTO)
 * having closed anything received. `timeoutMs` bounds the whole take and, separately, confirm().
 * `shown` is the path to name in messages (default path).
 */
export async function takeOver(path: string, timeoutMs: number, shown = path): Promise<TakenOver> {
  const euid = process.geteuid!();
  const sock = await connectTo(path, shown);
  const timer = deadline(sock, timeoutMs, `the old brokerd at ${shown} to hand over its fds`);
  const take: Take = { sock, timeoutMs, pidfd: -1, oldPid: 0, total: -1, meta: null, received: [] };
  try {
    const peer = sock.peerIdentity();
    take.pidfd = peer.pidfd;
    take.oldPid = peer.pid;
    if (peer.uid !== euid)
      throw new HandoverError(
        `refusing to take over from pid ${peer.pid} at ${shown}: it runs as uid ${peer.uid}, this brokerd as uid ${euid}`,
        "EPERM",
      );
    await sock.send(encode({ op: "take", version: HANDOVER_VERSION, pid: process.pid }));
    await receiveFds(take);
  } catch (err) {
    timer.clear();
    sock.close();
    closeAll(take.received.map((f) => f.fd));
    if (take.pidfd >= 0) closeAll([take.pidfd]);
    throw timer.error() ?? err;
  }
  timer.clear();
  let settling: Promise<void> | undefined;
  return {
    fds: take.received,
    meta: take.meta,
    oldPid: take.oldPid,
    confirm: () => {
      settling ??= confirm(take);
      return settling;
    },
    abandon: (reason) => {
      settling ??= abandon(take, reason);
      return settling;
    },
  };
}

async function connectTo(path: string, shown: string): Promise<FdSocket> {
  try {
    return await FdSocket.connect(path);
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
}

/** Reads fds frames up to {op:"end"}; a refusal, an abort or anything else unexpected throws. */
async function receiveFds(take: Take): Promise<void> {
  const { sock, oldPid, received } = take;
  for (;;) {
    const m = await sock.recv({ maxBytes: MAX_HANDOVER_FRAME, maxFds: MAX_FDS_PER_MESSAGE });
    if (!m)
      throw new HandoverError(
        `the old brokerd (pid ${oldPid}) closed the connection after ${received.length} fds, before {op:"end"}`,
        "EPROTO",
      );
    const f = checkFrame(take, m);
    if (f.op === "fds") {
      (f.names as string[]).forEach((name, i) => {
        received.push({ name, fd: m.fds[i]! });
      });
      continue;
    }
    if (f.op === "end") {
      if (take.total < 0 || f.count !== take.total || received.length !== take.total)
        throw new HandoverError(
          `hand-over protocol: end says ${JSON.stringify(f.count)} fds, announced ${take.total}, received ${received.length}`,
          "EPROTO",
        );
      return;
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
}

/**
 * Decodes one message and checks its fds against what the frame says (the first fds frame sets
 * take.total and take.meta). On any violation the message's fds are closed before it throws.
 */
function checkFrame(take: Take, m: FdMessage): Frame {
  try {
    const f = decode(m.data);
    if (f.op === "fds") {
      const names = f.names;
      if (!Array.isArray(names) || names.some((n) => typeof n !== "string") || names.length !== m.fds.length)
        throw new HandoverError(
          `hand-over protocol: an fds frame names ${Array.isArray(names) ? names.length : "no"} fds but carries ${m.fds.length}`,
          "EPROTO",
        );
      if (take.total < 0) {
        if (!Number.isInteger(f.total) || (f.total as number) < 0)
          throw new HandoverError("hand-over protocol: the first fds frame has no total", "EPROTO");
        take.total = f.total as number;
        take.meta = f.meta ?? null;
      }
      if (take.received.length + names.length > take.total)
        throw new HandoverError(`hand-over protocol: more fds than the ${take.total} announced`, "EPROTO");
    } else if (m.fds.length > 0) {
      throw new HandoverError(`hand-over protocol: fds arrived with op ${JSON.stringify(f.op)}`, "EPROTO");
    }
    return f;
  } catch (err) {
    closeAll(m.fds);
    throw err;
  }
}

/** Sends "taken", then waits for "released" and the close, or for the old brokerd's exit. */
async function confirm(take: Take): Promise<void> {
  const { sock, oldPid, pidfd, timeoutMs } = take;
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
}

/** Closes every fd taken and tells the old brokerd why this one will not serve. */
async function abandon(take: Take, reason: string): Promise<void> {
  closeAll(take.received.map((f) => f.fd));
  try {
    await take.sock.send(encode({ op: "abandon", reason }));
  } catch {
    // the old side is gone already: its own timeout or the closed socket makes it serve again
  } finally {
    take.sock.close();
    closeAll([take.pidfd]);
  }
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
