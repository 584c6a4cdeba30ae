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
  | { kind: "device_health"; deviceId: string; health: DeviceHealth };

export interface LeaseSink {
  send(event: LeaseEvent): void;
}

export class Session {
  readonly deviceFiles = new Map<bigint, DeviceFile>();
  readonly connectedAt = Date.now();
  clientName = "";
  bytesMapped = 0n;
  lease: LeaseSink | undefined;
  ended = false;
  pidWatch: Watch | undefined;

  constructor(
    readonly id: string,
    readonly identity: PeerIdentity,
  ) {}

  get mappingCount(): number {
    let n = 0;
    for (const df of this.deviceFiles.values()) n += df.mappings.size;
    return n;
  }
}
