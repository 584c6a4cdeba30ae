// HoldBook: mappings that were revoked while their holder may still map them. brokerd cannot take
// back a delivered fd's mmap: not for a memfd, a sysfs resource file, the VFIO device fd, nor a
// DMABUF (the kernel revokes those only on device reset or close, which one revocation does not
// do). So a revocation only *asks* the holder to unmap; until the holder releases the mapping
// (ReleaseMapping / CloseDevice on its session) or its process exits, the pages stay booked in
// the AttributeMap and the bytes and mapping count in the identity's quota: no page is booked
// with a second memory type while somebody may still map it with the first.
// This file owns the bookkeeping of those holds: by holder process, by the session and device file
// that may release them, by device (conflict messages), and their enforcement deadlines. Pure: no
// I/O, no timers, no signals (the Broker watches pidfds and kills).
import type { Attribute, BackingKind, Prot } from "../devices/backend.js";
import { formatBytes, hex } from "../devices/regions.js";

/** Who enforces a revocation, and after how long (ms); undefined: nobody, the holder decides. */
export interface Enforcement {
  /** "operator", or "policy:<rule>" */
  by: string;
  graceMs: number;
}

/** One revoked mapping whose holder has not unmapped it yet (state "revoking"). */
export interface Hold {
  /** Unique across runs (the state store keys holds by it). */
  id: string;
  /** The holder: the process the fd was delivered to (pid + /proc start time name one process). */
  pid: number;
  startTime: string;
  uid: number;
  /** The session that may still release it (ReleaseMapping / CloseDevice); it may have ended. */
  sessionId: string;
  deviceFileId: bigint;
  cookie: bigint;
  deviceId: string;
  regionIndex: number;
  regionName: string;
  offset: bigint;
  length: bigint;
  attribute: Attribute;
  prot: Prot;
  kind: BackingKind;
  /** CreateMapping references it counted against the mappings quota. */
  refs: number;
  /** The quota keys its mappings and bytes stay charged to. */
  quotaKeys: string[];
  rule: string;
  /** Why it was revoked (operator, policy, device-drain, disconnect, ...). */
  reason: string;
  /** When it was revoked (ms since the epoch). */
  since: number;
  /** When brokerd kills the holder if it still holds (ms since the epoch); 0: never. */
  enforceAt: number;
  /** Who asked for the enforcement ("" when none). */
  enforceBy: string;
  /** SIGKILL was sent (the holder's exit releases the hold). */
  enforced: boolean;
}

/**
 * Why a mapping ends that its holder itself caused, or whose fd never reached it (its release, its
 * close, its exit, a ticket it never redeemed, a grant that failed before its fd went out, one
 * whose fd the kernel refused to send): its pages are free at once. Every other reason is a
 * revocation, which only asks a live holder to unmap.
 */
export const HOLDER_ENDED: ReadonlySet<string> = new Set([
  "client",
  "process-exit",
  "ticket-expired",
  "store-failed",
  "resumed",
  "undeliverable",
]);
/** Ends the holder's own connection caused: held until it exits, but never enforced by the policy. */
export const CONNECTION_ENDED: ReadonlySet<string> = new Set([
  "disconnect",
  "lease-closed",
  "lease-cancelled",
  "lease-error",
]);

/**
 * A mapping leaving its device file for `reason` stays booked (becomes a hold) when its fd went
 * out, its holder process still lives, and the holder did not end it itself.
 */
export function staysBooked(delivered: boolean, reason: string, holderAlive: () => boolean): boolean {
  return delivered && !HOLDER_ENDED.has(reason) && holderAlive();
}

/**
 * The enforcement a new hold gets: the operator's for this revocation, else the rule's
 * (revoke.enforce: kill); none when the holder's own connection ended.
 */
export function enforcementFor(
  reason: string,
  operator: Enforcement | undefined,
  rule: { name: string; revoke: { enforce: "none" | "kill"; graceMs: number } } | undefined,
): Enforcement | undefined {
  if (CONNECTION_ENDED.has(reason)) return undefined;
  if (operator) return operator;
  if (rule?.revoke.enforce === "kill") return { by: `policy:${rule.name}`, graceMs: rule.revoke.graceMs };
  return undefined;
}

/** The key of a holder process: pid and start time. */
export function holderKey(pid: number, startTime: string): string {
  return `${pid}:${startTime}`;
}

/** What the client, console and docs say a revocation of this backing does. */
export function revocationText(kind: BackingKind): string {
  const why: Record<BackingKind, string> = {
    memfd: "a memfd mapping cannot be taken back",
    sysfs: "a sysfs resource-file mapping cannot be taken back",
    "sysfs-wc": "a sysfs resource-file mapping cannot be taken back",
    "vfio-device-fd":
      "the VFIO device fd the holder has stays usable (a device reset would not unmap it either)",
    dmabuf: "the kernel revokes a DMABUF only on device reset or close, which a revocation does not do",
  };
  return `asked to unmap (${why[kind]}); the pages stay booked until the holder releases the mapping or its process exits`;
}

/** What a revocation of a mapping does, and where a revoked one stands (admin listings). */
export interface RevocationView {
  /** "immediate": no fd of it left brokerd; "unmap-requested": the holder is asked to unmap. */
  kind: "immediate" | "unmap-requested";
  description: string;
  /** brokerd can kill the holder through its pidfd (a delivered mapping's holder). */
  enforceable: boolean;
  policyEnforce: "none" | "kill";
  policyGraceMs: number;
  revokedReason: string;
  revokedAt: number;
  enforceAt: number;
  enforceBy: string;
  enforced: boolean;
  holderPid: number;
}

/** The view of a live mapping: pending (no fd out) or delivered to pid. */
export function liveRevocation(
  delivered: boolean,
  kind: BackingKind,
  pid: number,
  rule: { enforce: "none" | "kill"; graceMs: number } | undefined,
): RevocationView {
  const policyEnforce = rule?.enforce ?? "none";
  const policyGraceMs = rule?.graceMs ?? 0;
  const enforcement =
    policyEnforce === "kill"
      ? `; the policy kills a holder that still holds it ${policyGraceMs} ms after a revocation`
      : "; an operator may enforce a revocation (the holder is killed after a grace period)";
  return {
    kind: delivered ? "unmap-requested" : "immediate",
    description: delivered
      ? `${revocationText(kind)}${enforcement}`
      : "no fd of it left brokerd yet: a revocation frees its pages at once",
    enforceable: delivered,
    policyEnforce,
    policyGraceMs,
    revokedReason: "",
    revokedAt: 0,
    enforceAt: 0,
    enforceBy: "",
    enforced: false,
    holderPid: delivered ? pid : 0,
  };
}

/** The view of a hold (state "revoking"). */
export function heldRevocation(h: Hold): RevocationView {
  const enforcement = h.enforced
    ? "; brokerd killed the holder and frees the pages when it has exited"
    : h.enforceAt > 0
      ? `; brokerd kills the holder at ${new Date(h.enforceAt).toISOString()} (${h.enforceBy}) if it still holds it`
      : "; not enforced: revoke it again with enforce to kill the holder";
  return {
    kind: "unmap-requested",
    description: `${revocationText(h.kind)}${enforcement}`,
    enforceable: true,
    policyEnforce: h.enforceBy.startsWith("policy:") ? "kill" : "none",
    policyGraceMs: 0,
    revokedReason: h.reason,
    revokedAt: h.since,
    enforceAt: h.enforceAt,
    enforceBy: h.enforceBy,
    enforced: h.enforced,
    holderPid: h.pid,
  };
}

export class HoldBook {
  private readonly byId = new Map<string, Hold>();
  private readonly byHolder = new Map<string, Set<Hold>>();
  private readonly byDevice = new Map<string, Set<Hold>>();
  private readonly bySession = new Map<string, Set<Hold>>();
  /** Bytes held, over all holds (metrics). */
  bytes = 0n;

  get size(): number {
    return this.byId.size;
  }

  all(): IterableIterator<Hold> {
    return this.byId.values();
  }

  get(id: string): Hold | undefined {
    return this.byId.get(id);
  }

  add(h: Hold): void {
    if (this.byId.has(h.id)) throw new Error(`hold ${h.id} added twice`);
    this.byId.set(h.id, h);
    const k = holderKey(h.pid, h.startTime);
    const mine = this.byHolder.get(k) ?? new Set<Hold>();
    this.byHolder.set(k, mine);
    mine.add(h);
    const dev = this.byDevice.get(h.deviceId) ?? new Set<Hold>();
    this.byDevice.set(h.deviceId, dev);
    dev.add(h);
    const ses = this.bySession.get(h.sessionId) ?? new Set<Hold>();
    this.bySession.set(h.sessionId, ses);
    ses.add(h);
    this.bytes += h.length;
  }

  /** Forgets h; true when it was held. The caller releases its pages and quota. */
  remove(h: Hold): boolean {
    if (!this.byId.delete(h.id)) return false;
    const k = holderKey(h.pid, h.startTime);
    const mine = this.byHolder.get(k);
    mine?.delete(h);
    if (mine?.size === 0) this.byHolder.delete(k);
    const dev = this.byDevice.get(h.deviceId);
    dev?.delete(h);
    if (dev?.size === 0) this.byDevice.delete(h.deviceId);
    const ses = this.bySession.get(h.sessionId);
    ses?.delete(h);
    if (ses?.size === 0) this.bySession.delete(h.sessionId);
    this.bytes -= h.length;
    return true;
  }

  /** The holds of one holder process. */
  ofHolder(pid: number, startTime: string): Hold[] {
    return [...(this.byHolder.get(holderKey(pid, startTime)) ?? [])];
  }

  /** Holder processes with at least one hold. */
  holders(): string[] {
    return [...this.byHolder.keys()];
  }

  /** The holds a session may release: of its device file, and of one cookie of it if given. */
  ofSession(sessionId: string, deviceFileId: bigint, cookie?: bigint): Hold[] {
    const out: Hold[] = [];
    for (const h of this.bySession.get(sessionId) ?? [])
      if (h.deviceFileId === deviceFileId && (cookie === undefined || h.cookie === cookie)) out.push(h);
    return out;
  }

  /** Every hold of a session (it may have ended). */
  ofSessionId(sessionId: string): Hold[] {
    return [...(this.bySession.get(sessionId) ?? [])];
  }

  ofDevice(deviceId: string): Hold[] {
    return [...(this.byDevice.get(deviceId) ?? [])];
  }

  /** A hold over any page of [offset, +length) of the region with another attribute, if any. */
  conflict(
    deviceId: string,
    regionIndex: number,
    offset: bigint,
    length: bigint,
    attribute: Attribute,
    pageSize: bigint,
  ): Hold | undefined {
    const first = offset / pageSize;
    const last = (offset + length - 1n) / pageSize;
    for (const h of this.byDevice.get(deviceId) ?? []) {
      if (h.regionIndex !== regionIndex || h.attribute === attribute) continue;
      const hFirst = h.offset / pageSize;
      const hLast = (h.offset + h.length - 1n) / pageSize;
      if (hFirst <= last && first <= hLast) return h;
    }
    return undefined;
  }

  /** Holds whose enforcement is due at `now` and not yet carried out. */
  due(now: number): Hold[] {
    const out: Hold[] = [];
    for (const h of this.byId.values()) if (h.enforceAt > 0 && !h.enforced && now >= h.enforceAt) out.push(h);
    return out;
  }
}

/** FAILED_PRECONDITION text for a request that overlaps a hold with another attribute. */
export function heldMessage(h: Hold, now: number): string {
  const secs = Math.max(0, Math.round((now - h.since) / 1000));
  const enforce =
    h.enforceAt > 0
      ? h.enforced
        ? "; brokerd has killed it and frees the pages when it has exited"
        : `; brokerd kills it in ${Math.max(0, Math.ceil((h.enforceAt - now) / 1000))} s (${h.enforceBy})`
      : "; an operator may revoke it again with enforce to kill the holder";
  return (
    `${h.deviceId} ${h.regionName} bytes ${hex(h.offset)}-${hex(h.offset + h.length - 1n)} (${formatBytes(h.length)}) ` +
    `are still held ${h.attribute} by a revoked mapping whose holder (pid ${h.pid}, uid ${h.uid}) has not unmapped ` +
    `it (revoked ${secs} s ago, reason ${h.reason}): one page cannot have two memory types (x86 PAT). ` +
    `The pages are free once the holder releases the mapping or exits${enforce}`
  );
}
