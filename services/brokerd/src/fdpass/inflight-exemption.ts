// inflight-exemption.ts: owns whether brokerd is exempt from the kernel's per-user limit on fds in
// flight on Unix sockets, from its effective capability set (the CapEff line of /proc/self/status),
// and what it says when it is not. The kernel (net/unix, too_many_unix_fds()) fails a sendmsg with
// SCM_RIGHTS with ETOOMANYREFS once the sending user's in-flight count exceeds the sender's
// RLIMIT_NOFILE, unless the sender has CAP_SYS_RESOURCE or CAP_SYS_ADMIN. The count is per user,
// so any other process of brokerd's uid (root, in a container without a user namespace: every
// root process on the host) can push it over and starve every delivery.
// Pure: no I/O; the caller reads the status file. It never changes capabilities.

export const CAP_SYS_ADMIN = 21;
export const CAP_SYS_RESOURCE = 24;

/** The CapEff mask from /proc/<pid>/status text; undefined if the line is missing. */
export function parseCapEff(status: string): bigint | undefined {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : undefined;
}

export interface InflightExemption {
  sysResource: boolean;
  sysAdmin: boolean;
  /** Either capability: the kernel does not apply the in-flight limit to brokerd's sends. */
  exempt: boolean;
}

export function inflightExemption(capEff: bigint): InflightExemption {
  const has = (bit: number) => ((capEff >> BigInt(bit)) & 1n) === 1n;
  const sysResource = has(CAP_SYS_RESOURCE);
  const sysAdmin = has(CAP_SYS_ADMIN);
  return { sysResource, sysAdmin, exempt: sysResource || sysAdmin };
}

/**
 * The start-up warning when brokerd is not exempt ("" when it is). brokerd starts anyway: without
 * the capability deliveries still work until others of its uid hold that many fds in flight, and a
 * non-root brokerd (npm start) never has it. Every failure is then reported as ETOOMANYREFS.
 */
export function inflightWarning(e: InflightExemption | undefined, uid: number, nofile: number): string {
  if (e?.exempt) return "";
  const what = e ? "has neither CAP_SYS_RESOURCE nor CAP_SYS_ADMIN" : "cannot tell its capabilities";
  return (
    `warning: brokerd ${what}, so the kernel's per-user limit on fds in flight on Unix sockets ` +
    `applies to it: once processes of uid ${uid} hold more than ${nofile} (brokerd's RLIMIT_NOFILE) fds ` +
    `in unread messages, every fd delivery fails with ETOOMANYREFS. Give brokerd CAP_SYS_RESOURCE ` +
    `(systemd CapabilityBoundingSet=, compose cap_add, Kubernetes capabilities.add; docs/security.md)`
  );
}
