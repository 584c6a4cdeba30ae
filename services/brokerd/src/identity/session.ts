// Session: one connected client with its kernel-verified identity. It owns its DeviceFiles; its
// lease (the Lease stream, if opened) carries revocations and health events down to the client.
// A session ends when its connection or lease closes, or its process exits (pidfd).
import type { Watch } from "@vfio-broker/native";
import type { DeviceHealth } from "../devices/backend.js";
import type { DeviceFile } from "../grants/device-file.js";
import type { PeerIdentity } from "./peer.js";
import { SmallMap } from "./small-map.js";
import { type Tenant, uidTenant } from "./subuid.js";

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

/** What a remembered request id made. */
type Made = { deviceFileId?: bigint; cookie?: bigint };
const NO_REQUESTS: ReadonlyMap<string, Made> = new Map();

/**
 * Request ids remembered per session: a client retries only its few calls in flight. Each id is at
 * most 64 bytes (rpc/strings.ts), so a session remembers at most 256 x 64 bytes of them.
 */
export const MAX_REMEMBERED_REQUESTS = 256;
/** Lease events queued for a detached session; more are dropped (the resume reply lists what is held). */
export const MAX_MISSED_EVENTS = 256;

export class Session {
  /** Its open device files by id (one, usually: held without a Map until a second). */
  readonly deviceFiles: Map<bigint, DeviceFile> = new SmallMap();
  readonly connectedAt = Date.now();
  clientName = "";
  lease: LeaseSink | undefined;
  ended = false;
  pidWatch: Watch | undefined;
  /** Last call on this session (for the idle timeout of sessions that hold nothing). */
  lastActiveAt = Date.now();
  /** The session's slot in its identity's sessions quota, held until its connection closes. */
  slotHeld = true;
  /**
   * Restored from the state store with no connection yet (brokerd restarted): it waits for its
   * process to resume it (Hello with the resume token), since when (ms), and queues the lease
   * events it misses meanwhile.
   */
  detachedSince = 0;
  /** Those events, oldest first (made with the first). */
  #missed: LeaseEvent[] | undefined;
  /**
   * Recent OpenDevice/CreateMapping request ids and what they made (by id, so a closed device file
   * is not kept alive by its request id), so a retry gets the same. Made on the first (sessions
   * of clients that send none hold nothing), and a SmallMap: libvfio-broker sends one with its
   * OpenDevice, and a Map holding that one was ~180 bytes of every idle session.
   */
  get requests(): ReadonlyMap<string, Made> {
    return this.#requests ?? NO_REQUESTS;
  }
  #requests: SmallMap<string, Made> | undefined;

  constructor(
    readonly id: string,
    readonly identity: PeerIdentity,
    /** The QuotaBook keys this session's holdings are charged to (identity/container.ts). */
    readonly quotaKeys: readonly string[],
    /** sha256 (hex) of the resume token; the token itself is given once, in Hello's reply. */
    readonly tokenHash: string,
    /**
     * The token in the clear, once this brokerd knows it: issued here (Hello returns it), or
     * presented in a resume ("" for a restored session until then). Never written to disk.
     */
    public resumeToken = "",
    /**
     * The user this identity belongs to (identity/subuid.ts), decided once when the session
     * opened: its slot and pending mappings are charged to this tenant's fair share of brokerd's caps.
     */
    readonly tenant: Tenant = uidTenant(identity.uid),
  ) {}

  get detached(): boolean {
    return this.detachedSince !== 0;
  }

  /** Remembers what a request id made (bounded: the oldest is forgotten). */
  remember(requestId: string, made: Made): void {
    if (requestId === "") return;
    this.#requests ??= new SmallMap();
    const requests = this.#requests;
    // A retried id moves to the newest place.
    requests.delete(requestId);
    requests.set(requestId, made);
    if (requests.size > MAX_REMEMBERED_REQUESTS) requests.delete(requests.keys().next().value!);
  }

  /** Queues a lease event missed while detached (past MAX_MISSED_EVENTS it is dropped). */
  miss(e: LeaseEvent): void {
    this.#missed ??= [];
    if (this.#missed.length < MAX_MISSED_EVENTS) this.#missed.push(e);
  }

  /** The events missed, oldest first; none are queued after. */
  takeMissed(): readonly LeaseEvent[] {
    const m = this.#missed ?? [];
    this.#missed = undefined;
    return m;
  }

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
