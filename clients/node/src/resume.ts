// resume.ts: owns what the client does when brokerd restarts under it (kill -9, a crash, an
// upgrade): which errors mean "brokerd went away, nothing was done" and may be retried after a
// resume, and the backoff. The session-bound RPC client is grpc-channel.ts's; the resume itself
// (Hello with the token, the held list, the new lease) is the session transports'.
import { BrokerClientError, FdChannelError } from "./errors.js";
import { isClosedByPeer } from "./fd-channel.js";

/** brokerd's own UNAVAILABLE answers that mean "not now", not "brokerd went away". */
const BROKERD_REFUSALS =
  /^(device |this session has ended|brokerd has \d+|brokerd is shutting down|brokerd cannot record)/;

/**
 * The error says brokerd restarted (or is restarting) and the call did nothing there: retry it
 * after resuming. Transport failures qualify too: every call that changes state carries a request
 * id or is idempotent, so a retry of a call that did run cannot double anything.
 */
export function isRestart(e: unknown): boolean {
  if (!(e instanceof BrokerClientError)) return false;
  if (e.code === "FAILED_PRECONDITION") return /resume with Hello/.test(e.details);
  if (e.code !== "UNAVAILABLE") return false;
  if (/brokerd is restarting/.test(e.details)) return true;
  return !BROKERD_REFUSALS.test(e.details);
}

/** The fd channel's connection failed or was closed by brokerd (EOF, ECONNRESET, EPIPE): it went away. */
export function brokerdGone(e: unknown): boolean {
  return (
    e instanceof FdChannelError && (e.status === "CONNECT" || (e.status === "PROTOCOL" && isClosedByPeer(e)))
  );
}

/**
 * The LeaseEnded reason (or lease_ended's, on the workload protocol), or transport loss, that means
 * "resume", not "your session ended": a workload connection brokerd closed without saying why is
 * brokerd gone (killed, crashed).
 */
export function leaseLossIsRestart(endedReason: string | undefined, error: Error | undefined): boolean {
  if (endedReason !== undefined) return endedReason === "restart";
  return isRestart(error) || brokerdGone(error);
}

/** Exponential backoff from 25 ms to 1 s, for reconnecting while brokerd restarts. */
export function backoffMs(attempt: number): number {
  return Math.min(1000, 25 * 2 ** Math.min(attempt, 6));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
