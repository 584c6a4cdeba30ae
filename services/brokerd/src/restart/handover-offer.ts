// handover-offer.ts: owns the old side of the planned-upgrade hand-over (restart/handover.ts): the
// socket a successor connects to, the checks on who may take over, and the transfer of every fd
// collect() lists. It never takes fds over itself (handover-take.ts) and never decides what to hand
// over or how to freeze: its hooks do.
import {
  FdServer,
  type FdSocket,
  MAX_FDS_PER_MESSAGE,
  type NativeError,
  type PeerCred,
  peerCred,
} from "@vfio-broker/native";
import type { NamedFd } from "./fdstore.js";
import {
  deadline,
  decode,
  encode,
  type Frame,
  HANDOVER_VERSION,
  HandoverError,
  MAX_HANDOVER_FRAME,
  SMALL_FRAME,
} from "./handover-wire.js";

/** How long a connected taker has to say "take" before the old side drops it. */
const TAKE_WAIT_MS = 10_000;
/** Connections that have not said "take" yet; more are refused (they cost an fd and a timer each). */
const MAX_WAITING = 16;
const DEFAULT_OLD_TIMEOUT_MS = 30_000;

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
  const offer = new Offer(path, hooks, opts.timeoutMs ?? DEFAULT_OLD_TIMEOUT_MS, opts.shown ?? path);
  return { close: () => offer.close() };
}

/** Why a take frame from `pid` is not one this brokerd answers (undefined: it is). */
function takeProblem(take: Frame, pid: number): string | undefined {
  if (take.op !== "take") return `expected {op:"take"}, got op ${JSON.stringify(take.op)}`;
  if (take.version !== HANDOVER_VERSION)
    return `hand-over protocol version ${JSON.stringify(take.version)} is not supported (this brokerd speaks ${HANDOVER_VERSION})`;
  if (take.pid !== pid) return `the take names pid ${JSON.stringify(take.pid)}, but the peer is pid ${pid}`;
  return undefined;
}

/** Sends every fd in frames of at most MAX_FDS_PER_MESSAGE, then {op:"end"}. */
async function sendFds(sock: FdSocket, fds: NamedFd[], meta: unknown): Promise<void> {
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
}

/** Waits for the taker's {op:"taken"}; throws on anything else (its abandon included). */
async function awaitTaken(sock: FdSocket, pid: number): Promise<void> {
  const reply = await sock.recv({ maxBytes: SMALL_FRAME, maxFds: 0 });
  if (!reply) throw new Error(`pid ${pid} closed the connection before confirming it holds the fds`);
  const r = decode(reply.data);
  if (r.op === "abandon")
    throw new HandoverError(`pid ${pid} will not serve: ${String(r.reason).slice(0, 2000)}`, "EABORTED");
  if (r.op !== "taken")
    throw new HandoverError(`expected {op:"taken"}, got op ${JSON.stringify(r.op)}`, "EPROTO");
}

/** The offer's socket and the takers on it: at most one transferring, a few waiting to say "take". */
class Offer {
  private readonly server: FdServer;
  private readonly euid = process.geteuid!();
  /**
   * Only a taker that has sent a valid take holds the slot: a connection that never speaks (e.g.
   * the liveness probe of a second offerHandover) must not block the real successor.
   */
  private active: { sock: FdSocket; pid: number; settled: Promise<void> } | null = null;
  private readonly waiting = new Set<FdSocket>();
  private closed = false;

  constructor(
    path: string,
    private readonly hooks: HandoverHooks,
    private readonly timeoutMs: number,
    shown: string,
  ) {
    try {
      this.server = FdServer.listen(path, { mode: 0o600 });
    } catch (err) {
      if ((err as NativeError).code === "EADDRINUSE")
        throw new HandoverError(
          `another process is already offering a hand-over at ${shown} (is another brokerd being upgraded?)`,
          "EREFUSED",
          { cause: err },
        );
      throw err;
    }
    this.server.onConnection((sock) => this.accept(sock));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.server.close();
    for (const sock of this.waiting) sock.close();
    if (this.active) {
      this.active.sock.close();
      await this.active.settled;
    }
  }

  private refuse(sock: FdSocket, reason: string, peer: PeerCred): void {
    this.hooks.refused?.(reason, peer);
    sock
      .send(encode({ op: "refused", reason }))
      .catch(() => {})
      .finally(() => sock.close());
  }

  private accept(sock: FdSocket): void {
    let peer: PeerCred;
    try {
      peer = peerCred(sock.fd);
    } catch {
      sock.close();
      return;
    }
    const refusal =
      peer.uid !== this.euid
        ? `uid ${peer.uid} may not take over this brokerd (it runs as uid ${this.euid})`
        : this.closed
          ? "this brokerd no longer offers a hand-over"
          : this.waiting.size >= MAX_WAITING
            ? "too many connections waiting to take over"
            : undefined;
    if (refusal !== undefined) this.refuse(sock, refusal, peer);
    else void this.greet(sock, peer);
  }

  /** Reads the taker's take; a valid one, with no hand-over in progress, starts the transfer. */
  private async greet(sock: FdSocket, peer: PeerCred): Promise<void> {
    this.waiting.add(sock);
    const first = deadline(sock, TAKE_WAIT_MS, `pid ${peer.pid} to send {op:"take"}`);
    let take: Frame;
    try {
      const m = await sock.recv({ maxBytes: SMALL_FRAME, maxFds: 0, keepOpenOnError: true });
      if (!m) return sock.close();
      take = decode(m.data);
    } catch (err) {
      return this.refuse(sock, (first.error() ?? (err as Error)).message, peer);
    } finally {
      first.clear();
      this.waiting.delete(sock);
    }
    const problem = takeProblem(take, peer.pid);
    if (problem) return this.refuse(sock, problem, peer);
    if (this.closed) return this.refuse(sock, "this brokerd no longer offers a hand-over", peer);
    if (this.active)
      return this.refuse(sock, `a hand-over to pid ${this.active.pid} is already in progress`, peer);
    const settled = this.transfer(sock, peer).finally(() => {
      this.active = null;
    });
    this.active = { sock, pid: peer.pid, settled };
  }

  /** collect(), send, wait for "taken", done(); any failure after collect() runs abort(). */
  private async transfer(sock: FdSocket, peer: PeerCred): Promise<void> {
    // From here on the old brokerd is frozen until done() or abort().
    let timer: ReturnType<typeof deadline> | undefined;
    let committed = false;
    try {
      const { fds, meta } = await this.hooks.collect();
      timer = deadline(sock, this.timeoutMs, `pid ${peer.pid} to take ${fds.length} fds and confirm`);
      await sendFds(sock, fds, meta);
      await awaitTaken(sock, peer.pid);
      timer.clear();
      committed = true; // new takers are refused as "in progress" until the listener closes
      await this.hooks.done();
      await sock.send(encode({ op: "released" })).catch(() => {});
      sock.close();
      this.server.close();
    } catch (err) {
      timer?.clear();
      const reason = timer?.error() ?? (err instanceof Error ? err : new Error(String(err)));
      const why = committed ? `done() failed: ${reason.message}` : reason.message;
      await sock.send(encode({ op: "aborted", reason: why })).catch(() => {});
      sock.close();
      try {
        await this.hooks.abort(
          new HandoverError(`hand-over to pid ${peer.pid} aborted: ${why}`, "EABORTED", { cause: reason }),
        );
      } catch (abortErr) {
        process.emitWarning(`hand-over: abort() failed: ${(abortErr as Error).message}`);
      }
    }
  }
}
