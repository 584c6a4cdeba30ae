// BrokerError: the one error type the core throws. Its code names the gRPC status the rpc layer
// answers with (docs/design.md §5.8); its message says what the caller should change. The core never
// imports grpc-js: rpc/status.ts does the translation.

export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "NOT_FOUND"
  | "PERMISSION_DENIED"
  | "RESOURCE_EXHAUSTED"
  | "FAILED_PRECONDITION"
  | "UNAVAILABLE"
  | "UNAUTHENTICATED"
  | "INTERNAL";

export class BrokerError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Low-cardinality reason for metrics and the audit log (e.g. "policy:attribute", "limit:bytes"). */
    readonly reason: string = code.toLowerCase(),
  ) {
    super(message);
    this.name = "BrokerError";
  }
}

export const invalid = (message: string, reason = "invalid_argument") =>
  new BrokerError("INVALID_ARGUMENT", message, reason);
export const notFound = (message: string, reason = "not_found") =>
  new BrokerError("NOT_FOUND", message, reason);
export const denied = (message: string, reason = "policy") =>
  new BrokerError("PERMISSION_DENIED", message, reason);
export const exhausted = (message: string, reason = "limit") =>
  new BrokerError("RESOURCE_EXHAUSTED", message, reason);
export const precondition = (message: string, reason = "precondition") =>
  new BrokerError("FAILED_PRECONDITION", message, reason);
export const unavailable = (message: string, reason = "unavailable") =>
  new BrokerError("UNAVAILABLE", message, reason);

/** A client-supplied string for an error message: JSON-quoted (no control characters) and cut short. */
export function quoted(value: string, max = 64): string {
  return JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value);
}

/** A call on a session that has ended (its connection closed, or brokerd ended it). */
export function sessionEnded(): BrokerError {
  return unavailable("this session has ended; reconnect", "session_ended");
}

/** Refused while brokerd restarts or hands over: nothing was done; resume with Hello and retry. */
export function restarting(): BrokerError {
  return unavailable(
    "brokerd is restarting and keeps your grants; resume with Hello and retry",
    "restarting",
  );
}

/** A state-store write failed: what was prepared is undone, and the client is told why. */
export function storeFailed(e: unknown): BrokerError {
  if (e instanceof BrokerError) return e;
  return unavailable(
    `brokerd cannot record this in its state store (${(e as Error).message}); nothing was granted. ` +
      "An operator must free space under the state directory",
    "store_failed",
  );
}
