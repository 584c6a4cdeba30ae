// Session: one connected client with its kernel-verified identity. It owns its DeviceFiles; its
// lease (the Lease stream, if opened) carries revocations and health events down to the client.
// A session ends when its connection or lease closes, or its process exits (pidfd).
import type { Watch } from "@vfio-broker/native";
import type { DeviceHealth } from "../devices/backend.js";
import type { DeviceFile } from "../grants/device-file.js";
import type { PeerIdentity } from "./peer.js";

export type LeaseEvent =
  | {
      kind: "revocation";
      deviceFileId: bigint;
      cookie: bigint;
      deviceId: string;
      reason: string;
      message: string;
    }
  | { kind: "device_health"; deviceId: string; health: DeviceHealth }
  | { kind: "keepalive_ack"; sequence: bigint };

export interface LeaseSink {
  send(event: LeaseEvent): void;
  /**
   * Sends LeaseEnded{reason, message} as the stream's last event and ends the call with status OK.
   * Resolves once that is flushed to the connection, or after a bounded wait (a peer that stopped
   * reading never gets to hold brokerd up). Idempotent.
   */
  end(reason: string, message: string): Promise<void>;
}

export class Session {
  readonly deviceFiles = new Map<bigint, DeviceFile>();
  readonly connectedAt = Date.now();
  clientName = "";
  lease: LeaseSink | undefined;
  ended = false;
  pidWatch: Watch | undefined;
  /** Last call on this session (for the idle timeout of sessions that hold nothing). */
  lastActiveAt = Date.now();
  /** The session's slot in its identity's sessions quota, held until its connection closes. */
  slotHeld = true;

  constructor(
    readonly id: string,
    readonly identity: PeerIdentity,
    /** The QuotaBook keys this session's holdings are charged to (identity/container.ts). */
    readonly quotaKeys: readonly string[],
  ) {}

  /** How quota messages name this session's identity. */
  get who(): string {
    return `uid ${this.identity.uid}`;
  }

  get mappingCount(): number {
    let n = 0;
    for (const df of this.deviceFiles.values()) n += df.mappings.size;
    return n;
  }
}
