// Label values for brokerd's metrics. Every label takes values from a small, fixed set (or from
// the configured device ids and VFIO region names): anything else becomes "other", so no client
// input, cookie, pid, uid or session id can ever grow a series. Pure functions, no I/O.

/** Why a session ended (Broker.endSession callers). */
export const SESSION_END_REASONS = [
  "disconnect",
  "process-exit",
  "lease-expired",
  "lease-closed",
  "lease-cancelled",
  "lease-error",
  "lease-stalled",
  "revoked",
  "shutdown",
  "idle",
  "policy",
  "claim-unprepared",
  "resumed",
  "resume-timeout",
] as const;

/** Why a mapping was released (dropMapping callers: the session end reasons plus these). */
export const RELEASE_REASONS = [
  "client",
  "operator",
  "ticket-expired",
  "device-drain",
  "device-gone",
  "policy",
  "claim-unprepared",
  "store-failed",
  "undeliverable",
  ...SESSION_END_REASONS,
] as const;

/** fd channel outcomes (Broker.redeemTicket and FdChannel). */
export const FD_RESULTS = [
  "ok",
  "unknown",
  "expired",
  "already_used",
  "wrong_peer",
  "revoked",
  "internal",
  "bad_request",
  "refused_busy",
] as const;

/** Policy DenyReason (policy/evaluate.ts). */
export const DENY_REASONS = ["no_rule", "device", "region", "attribute", "prot", "read_write"] as const;

/** Why a connection was refused before it got a session or slot (the connection.refused event). */
export const CONNECTION_REFUSAL_REASONS = [
  "limit:sessions",
  "limit:global_sessions",
  "limit:fdConnections",
  "limit:global_fd_connections",
  "draining",
  "not_admin",
  "internal",
  // HTTP/2 abuse closed the connection (rpc/server.ts), and refusals while its uid backs off.
  "limit:resets",
  "limit:headers",
  "protocol",
  "settings-timeout",
  "backoff",
] as const;

/** Broker revocation reasons ("operator": one mapping, "session": a whole session, device ones). */
export const REVOCATION_REASONS = [
  "operator",
  "session",
  "device-drain",
  "device-gone",
  "policy",
  "claim-unprepared",
] as const;

export const HEALTH_STATES = ["healthy", "draining", "gone"] as const;

/** BrokerError codes and the reasons CreateMapping refusals carry (broker.ts, grants/). */
export const REFUSAL_CODES = [
  "INVALID_ARGUMENT",
  "NOT_FOUND",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "UNAVAILABLE",
] as const;
export const REFUSAL_REASONS = [
  "range",
  "region_not_mappable",
  "unknown_region",
  "unknown_device_file",
  "attribute",
  "attribute_missing",
  "attribute_unsupported",
  "attribute_conflict",
  "held_by_revoked",
  "prot",
  "prot_missing",
  "limit:mappings",
  "limit:bytes",
  "limit:pendingMappings",
  "limit:global_pending",
  "limit:space",
  "device_draining",
  "device_gone",
  "backing_family",
  "policy:no_rule",
  "policy:device",
  "policy:region",
  "policy:attribute",
  "policy:prot",
  "session_ended",
] as const;

export const ATTRIBUTES = ["UC", "WC", "WB"] as const;

/** `value` if it is one of `known`, else "other". Lease reasons may carry detail after a colon. */
export function bounded(known: readonly string[], value: string): string {
  if (known.includes(value)) return value;
  const head = value.split(":", 1)[0] ?? "";
  return known.includes(head) ? head : "other";
}

/**
 * Why the audit journal dropped a line: the errno of the failed write or open (a full or read-only
 * filesystem, no fds left, the directory gone, an I/O error), or "format" for an event that could
 * not be serialised. Anything else is "other".
 */
export const JOURNAL_DROP_REASONS = [
  "ENOSPC",
  "EDQUOT",
  "EFBIG",
  "EMFILE",
  "ENFILE",
  "EIO",
  "ENOENT",
  "ENOTDIR",
  "EACCES",
  "EPERM",
  "EROFS",
  "EAGAIN",
  "EBADF",
  "ESTALE",
  "EPIPE",
  "format",
] as const;

/** The events the journal aggregates per identity ("other": the bounded table was full). */
export const JOURNAL_AGGREGATED_EVENTS = [
  "fd.delivery",
  "connection.refused",
  "denied",
  // A client's successes past its budget of full lines (journal.ts churn()).
  "session.open",
  "session.end",
  "devicefile.open",
  "devicefile.close",
  "mapping.create",
  "mapping.grant",
  "mapping.release",
  "mapping.refs",
  "other",
] as const;
