// The core's call and result types, shared by its services and the transports that call them
// (rpc/, fdpass/). Types and constants only: no logic, no I/O.
import { createHash } from "node:crypto";
import type { Attribute, Backend, Prot } from "../devices/backend.js";
import type { Mapping } from "../grants/device-file.js";
import type { RedeemFailure } from "../grants/tickets.js";
import type { TenantMap } from "../identity/subuid.js";
import type { Policy } from "../policy/index.js";
import type { Ledger } from "../state/ledger.js";

export const VERSION = "0.1.0";
export const DEFAULT_RESUME_GRACE_MS = 30_000;
export const DEFAULT_MAX_PENDING_MAPPINGS = 1024;
/**
 * Holder processes of revoked mappings watched by pidfd (one fd each, out of fd-budget.ts's
 * RESERVE_FDS); beyond, the sweep polls their /proc start time (no fd).
 */
export const MAX_WATCHED_HOLDERS = 64;
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/** sha256 of a resume token: what the state store and the session keep instead of the token. */
export function tokenHash(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export interface BrokerOptions {
  backends: Backend[];
  policy: Policy;
  pageSize: bigint;
  ticketTtlMs: number;
  /** Global cap on sessions (connections on broker.sock), over all identities. */
  maxSessions: number;
  /** Global cap on mappings waiting for delivery (each holds a backing fd), over all identities. */
  maxPendingMappings?: number;
  /** Which tenant (user) each uid belongs to (/etc/subuid); default: every uid its own tenant. */
  tenants?: TenantMap;
  /** Percent of each global cap kept for tenants below their minimum (grants/fair-share.ts). */
  tenantReservePercent?: number;
  /** A session with no lease and no mapping is ended after this long without a call. */
  idleTimeoutMs?: number;
  maxAccessBytes: number;
  fdSocketPath: string;
  /**
   * The fd socket's file name relative to the broker socket's directory ("" when they are in
   * different directories): a client in a container finds it next to the broker socket it mounted.
   */
  fdSocketName?: string;
  /** How often the sweep (expired tickets, idle sessions) runs. */
  sweepIntervalMs?: number;
  /** How long a session restored after a restart waits for its client to resume it (ms). */
  resumeGraceMs?: number;
  /** The state store's only writer (state/ledger.ts); none: nothing is recorded (tests, tools). */
  ledger?: Ledger;
}

/** The kernel-verified peer of a connection (SO_PEERCRED), as far as events need it. */
export interface FdPeer {
  uid: number;
  pid: number;
}

export interface CreateMappingArgs {
  deviceFileId: bigint;
  regionIndex: number;
  offset: bigint;
  length: bigint;
  attribute: Attribute | undefined;
  prot: Prot | undefined;
  allowFallback: boolean;
  /** The client's id for this call: a retry with the same id returns the same mapping. */
  requestId?: string;
}

export type Delivery =
  | { ok: true; mapping: Mapping }
  | { ok: false; status: RedeemFailure | "revoked" | "internal"; message: string; mapping?: Mapping };

/** Where records go (the state store, the journal), able to hold them for one batch. */
export interface Recorder {
  cork(): void;
  /** Writes what was held; throws if that failed (the state store), or never (the journal). */
  uncork(): void;
}

/** What CreateMapping gives: the mapping, and a ticket for its fd ("" if none is needed or left). */
export interface Grant {
  mapping: Mapping;
  ticket: string;
  expiresAt: number;
  /** Created and delivered at once (createMapping's deliverTo): the caller sends the fd now. */
  delivered?: boolean;
}

export interface RevokeCounts {
  mappingsRevoked: number;
  deviceFilesClosed: number;
  sessionsEnded: number;
  /** Of the mappings revoked, those whose holder may still map them: held until it unmaps or exits. */
  mappingsHeld?: number;
}

export function noCounts(): RevokeCounts {
  return { mappingsRevoked: 0, deviceFilesClosed: 0, sessionsEnded: 0 };
}
