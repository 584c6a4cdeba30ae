// resume.ts: owns what the client does when brokerd restarts under it (kill -9, a crash, an
// upgrade): which errors mean "brokerd went away, nothing was done" and may be retried after a
// resume, the session-bound RPC client (every call names the session it expects, so a call that
// lands on a fresh connection is refused by brokerd with nothing done), and the backoff.
// The resume itself (Hello with the token, the held list, the new lease) is BrokerClient's.
import * as grpc from "@grpc/grpc-js";
import type { BrokerService, PromiseClient } from "@vfio-broker/proto";
import { BrokerClientError, FdChannelError } from "./errors.js";
import { isClosedByPeer } from "./fd-channel.js";

/** Metadata naming the session a call expects (brokerd: rpc/broker-service.ts SESSION_METADATA). */
export const SESSION_METADATA = "vfio-broker-session";

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

/**
 * rpc with the session metadata on every call but Hello (which is where a session is resumed).
 * `session()` is read per call: after a resume the same client names the same session again.
 */
export function sessionBound(
  rpc: PromiseClient<typeof BrokerService>,
  session: () => string,
): PromiseClient<typeof BrokerService> {
  const md = () => {
    const m = new grpc.Metadata();
    m.set(SESSION_METADATA, session());
    return m;
  };
  return new Proxy(rpc, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== "function" || prop === "close" || prop === "hello") return v;
      const fn = v as (...args: unknown[]) => unknown;
      if (prop === "lease")
        return (opts?: { metadata?: grpc.Metadata }) => fn.call(target, { ...opts, metadata: md() });
      return (req: unknown, opts?: { metadata?: grpc.Metadata }) =>
        fn.call(target, req, { ...opts, metadata: md() });
    },
  });
}

/** Exponential backoff from 25 ms to 1 s, for reconnecting while brokerd restarts. */
export function backoffMs(attempt: number): number {
  return Math.min(1000, 25 * 2 ** Math.min(attempt, 6));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
