// delivery-failure.ts: owns what brokerd makes of a failed fd delivery (a reply carrying fds whose
// send failed): the errno label it is counted under, whether the frame went out at all (then the
// client can still be told why, and a grant's mapping is given back), and the message the client
// and the operator read. Pure: no I/O; it never decides to retry or to close anything itself.

/** errno labels of vfio_broker_fd_delivery_failures_total; anything else is "other". */
export const DELIVERY_FAILURE_ERRNOS = [
  "ETOOMANYREFS",
  "EPIPE",
  "ECONNRESET",
  "ETIMEDOUT",
  "ECLOSED",
  "ENOBUFS",
  "ENOMEM",
  "EBADF",
  "other",
] as const;

export interface DeliveryFailure {
  /** One of DELIVERY_FAILURE_ERRNOS. */
  errno: string;
  /** Nothing of the reply left brokerd and the connection is intact: an fd-less reply can follow. */
  unsent: boolean;
  /** For the client's FD_STATUS_UNDELIVERABLE reply and brokerd's stderr. */
  message: string;
}

/** What brokerd knows about its own standing with the kernel's in-flight fd limit. */
export interface InflightContext {
  /** brokerd's uid (the user whose in-flight fds the kernel counts). */
  uid: number;
  /** brokerd's RLIMIT_NOFILE soft limit: the count above which sends fail. */
  nofile: number;
}

/**
 * Classifies an error from FdSocket.send() of a reply with fds. `unsent` is what the native layer
 * says (frameNotSent): only then is the stream still usable for another reply.
 */
export function classifyDeliveryFailure(e: unknown, unsent: boolean, ctx: InflightContext): DeliveryFailure {
  const code = typeof (e as { code?: unknown })?.code === "string" ? (e as { code: string }).code : "";
  const errno = (DELIVERY_FAILURE_ERRNOS as readonly string[]).includes(code) ? code : "other";
  const what = (e as Error | undefined)?.message ?? String(e);
  if (code === "ETOOMANYREFS")
    return {
      errno,
      unsent,
      message:
        `brokerd could not pass the fd: sendmsg(SCM_RIGHTS) failed with ETOOMANYREFS. The kernel counts ` +
        `fds in flight on Unix sockets per user, and processes of brokerd's uid ${ctx.uid} hold more than ` +
        `brokerd's RLIMIT_NOFILE (${ctx.nofile}) in flight; brokerd lacks CAP_SYS_RESOURCE and ` +
        `CAP_SYS_ADMIN, which exempt it. Nothing was delivered. Operator: give brokerd CAP_SYS_RESOURCE ` +
        `(the shipped unit, compose file and DaemonSet do), or find the process of uid ${ctx.uid} that ` +
        `holds fds in unread Unix socket messages`,
    };
  return {
    errno,
    unsent,
    message: `brokerd could not pass the fd: ${what.slice(0, 200)}`,
  };
}
