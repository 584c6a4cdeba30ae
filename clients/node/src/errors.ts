// errors.ts: owns the client's two error types and the translation of grpc-js ServiceErrors into them.
// BrokerClientError carries the gRPC status NAME ("PERMISSION_DENIED") and the broker's own message,
// which says what to change; FdChannelError carries the fd channel's FdStatus name ("EXPIRED").
// Pure: no I/O, safe to import from tests without the native addon.
import type { status as GrpcStatus } from "@grpc/grpc-js";

/** gRPC status names, e.g. "PERMISSION_DENIED", plus "UNKNOWN" for anything unrecognised. */
export type BrokerErrorCode = keyof typeof GrpcStatus;

/** A BrokerService call failed (or could not be made). */
export class BrokerClientError extends Error {
  /** gRPC status name: "INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAVAILABLE", ... */
  readonly code: BrokerErrorCode | string;
  /** The broker's message (what went wrong and what to change), without the status prefix. */
  readonly details: string;
  /** The RPC that failed ("CreateMapping"), when known. */
  readonly method: string | undefined;

  constructor(code: string, details: string, opts?: { method?: string; cause?: unknown }) {
    super(`${opts?.method ? `${opts.method}: ` : ""}${details} (${code})`, { cause: opts?.cause });
    this.name = "BrokerClientError";
    this.code = code;
    this.details = details;
    this.method = opts?.method;
  }
}

/** The fd channel refused a ticket, or the delivery itself failed. */
export class FdChannelError extends Error {
  /**
   * FdStatus name without the prefix: "UNKNOWN_TICKET", "EXPIRED", "ALREADY_USED", "WRONG_PEER",
   * "REVOKED", "INTERNAL", "BAD_REQUEST", "UNDELIVERABLE" (the kernel refused to pass the fd:
   * ETOOMANYREFS; brokerd is running and the session intact); or, for failures on our side of the socket, "CONNECT"
   * (cannot reach fd.sock), "PROTOCOL" (a reply without its fd, a truncated or malformed message).
   */
  readonly status: string;
  /** The broker's message, or what failed locally. */
  readonly details: string;
  /** The connection was closed by brokerd before the request was answered. */
  readonly closedByPeer: boolean;

  constructor(status: string, details: string, opts?: { cause?: unknown; closedByPeer?: boolean }) {
    super(`fd channel: ${details} (${status})`, { cause: opts?.cause });
    this.name = "FdChannelError";
    this.status = status;
    this.details = details;
    this.closedByPeer = opts?.closedByPeer ?? false;
  }
}

/** The mapping was released or revoked; its memory is no longer mapped in this process. */
export class MappingGoneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MappingGoneError";
  }
}

/**
 * gRPC's status codes by number (the protocol's, grpc-js's `status`), written out so that this
 * module does not load grpc-js (a client on the workload protocol may never need it).
 */
const CODE_NAMES: readonly BrokerErrorCode[] = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** The name of a numeric gRPC status code (14 -> "UNAVAILABLE"); "UNKNOWN" for anything else. */
export function grpcCodeName(code: number): string {
  return CODE_NAMES[code] ?? "UNKNOWN";
}

interface ServiceErrorLike {
  code: number;
  details?: string;
  message?: string;
}

function isServiceErrorLike(e: unknown): e is ServiceErrorLike {
  return typeof e === "object" && e !== null && typeof (e as { code?: unknown }).code === "number";
}

/**
 * Any error thrown by a grpc-js call -> BrokerClientError. grpc-js puts the server's message in
 * `details` and prefixes `message` with "<code> <NAME>: "; we keep only the server's message.
 * Errors that already are ours pass through unchanged.
 */
export function toClientError(e: unknown, method?: string): Error {
  if (e instanceof BrokerClientError || e instanceof FdChannelError || e instanceof MappingGoneError)
    return e;
  if (isServiceErrorLike(e)) {
    const details = e.details || e.message?.replace(/^\d+ [A-Z_]+: /, "") || "no details";
    return new BrokerClientError(grpcCodeName(e.code), details, { method, cause: e });
  }
  if (e instanceof Error) return e;
  return new Error(String(e));
}
