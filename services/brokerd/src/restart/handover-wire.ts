// handover-wire.ts: owns the wire of the planned-upgrade hand-over (restart/handover.ts): its frames,
// their encoding, its errors and the per-phase deadline. Both sides import it; it never imports
// either side, and it holds no state of its own.
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
import { closeFd, type FdSocket } from "@vfio-broker/native";

export const HANDOVER_VERSION = 1;
/** Bound on one frame (the first carries meta): a larger one is a protocol violation. */
export const MAX_HANDOVER_FRAME = 16 * 1024 * 1024;
/** Bound on every frame but the fds frames. */
export const SMALL_FRAME = 64 * 1024;

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

export type Frame = { op: string } & Record<string, unknown>;

export function encode(frame: Frame): Buffer {
  return Buffer.from(JSON.stringify(frame));
}

export function decode(data: Buffer): Frame {
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

export function closeAll(fds: Iterable<number>): void {
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
export function deadline(
  sock: FdSocket,
  ms: number,
  what: string,
): { clear(): void; error(): Error | undefined } {
  let expired: Error | undefined;
  const timer = setTimeout(() => {
    expired = new HandoverError(`hand-over timed out after ${ms} ms waiting for ${what}`, "ETIMEDOUT");
    sock.close();
  }, ms);
  return { clear: () => clearTimeout(timer), error: () => expired };
}
