// events.ts: owns what a BrokerClient tells its listeners (revocation, deviceHealth, leaseLost,
// resumed: the event types) and the one interface a session transport reports through
// (SessionListener). Types only: it never decides what an event means for mappings (the
// BrokerClient does: it unmaps before any listener hears of a revocation) and does no I/O.
import type { HealthName } from "./convert.js";
import type { Mapping } from "./mapping.js";

export interface RevocationEvent {
  deviceFileId: bigint;
  /** 0n when the whole device file was revoked. */
  cookie: bigint;
  deviceId: string;
  /** "operator", "device-drain", "device-gone", "policy". */
  reason: string;
  message: string;
  /** The mappings of this client that the revocation took (already unmapped). */
  mappings: Mapping[];
}

export interface DeviceHealthEvent {
  deviceId: string;
  health: HealthName;
}

export interface LeaseLostEvent {
  reason: string;
  error: Error | undefined;
  /** Every mapping this client still held (all unmapped now: the broker ended the session). */
  mappings: Mapping[];
}

export interface ResumedEvent {
  sessionId: string;
  /** From noticing brokerd was gone to having the session back, ms. */
  downtimeMs: number;
  /** Attempts it took (each a fresh connection and Hello). */
  attempts: number;
}

export type BrokerClientEvents = {
  revocation: [RevocationEvent];
  deviceHealth: [DeviceHealthEvent];
  leaseLost: [LeaseLostEvent];
  /** brokerd restarted and this client has its session back (mappings never left). */
  resumed: [ResumedEvent];
};

/** What a revocation says, from a gRPC Lease or a workload event (the same fields). */
export interface RevocationNotice {
  deviceFileId: bigint;
  cookie: bigint;
  deviceId: string;
  reason: string;
  message: string;
}

/** How a session transport reports what its lease carries to the BrokerClient. */
export interface SessionListener {
  revocation(r: RevocationNotice): void;
  deviceHealth(deviceId: string, health: HealthName): void;
  /**
   * The lease is gone. endedReason: LeaseEnded's reason when brokerd said why ("restart": it
   * keeps the session for a resume); undefined on transport loss. gen: the connection generation
   * the lease belonged to (a late loss of an older one is ignored).
   */
  lost(reason: string, error: Error | undefined, endedReason: string | undefined, gen: number): void;
}
