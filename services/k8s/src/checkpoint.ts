// The DRA plugin's checkpoint: the claims it has prepared, in one JSON file in a directory that
// only the agent can write, replaced atomically (fsync'd) on every change, so that a restarted
// agent answers repeated NodePrepareResources calls and unprepares what it prepared before. Owns
// the file's format and its bounds; never decides what a claim gets (prepare.ts does).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ensurePrivateDir, writeFileAtomic } from "./atomic-file.js";
import {
  claimRefError,
  isUid,
  MAX_DEVICES_PER_CLAIM,
  MAX_PODS_PER_CLAIM,
  MAX_PREPARED_CLAIMS,
} from "./names.js";

export const CHECKPOINT_FILE = "checkpoint.json";
const FORMAT = 1;
/** The largest checkpoint file read back (MAX_PREPARED_CLAIMS claims of the largest shape fit). */
const MAX_FILE_BYTES = 64 * 1024 * 1024;

export interface PreparedDevice {
  request: string;
  pool: string;
  /** The ResourceSlice device name. */
  device: string;
  /** brokerd's device id ("sim0", "0000:3b:00.0"). */
  brokerId: string;
}

export interface PreparedClaim {
  uid: string;
  namespace: string;
  name: string;
  podUids: string[];
  devices: PreparedDevice[];
  cdiDeviceIds: string[];
}

function validClaim(c: PreparedClaim): boolean {
  return (
    typeof c === "object" &&
    claimRefError(c) === "" &&
    Array.isArray(c.podUids) &&
    c.podUids.length <= MAX_PODS_PER_CLAIM &&
    c.podUids.every(isUid) &&
    Array.isArray(c.devices) &&
    c.devices.length <= MAX_DEVICES_PER_CLAIM &&
    Array.isArray(c.cdiDeviceIds)
  );
}

export class Checkpoint {
  private readonly claims = new Map<string, PreparedClaim>();
  private readonly path: string;

  /** Opens (creating) the checkpoint in `dir`, which must be the agent's own (atomic-file.ts). */
  constructor(dir: string) {
    ensurePrivateDir(dir);
    this.path = join(dir, CHECKPOINT_FILE);
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    if (text.length > MAX_FILE_BYTES) throw new Error(`${this.path} is larger than ${MAX_FILE_BYTES} bytes`);
    const doc = JSON.parse(text) as { format?: number; claims?: PreparedClaim[] };
    if (doc.format !== FORMAT || !Array.isArray(doc.claims) || doc.claims.length > MAX_PREPARED_CLAIMS) {
      throw new Error(
        `${this.path} is not a format-${FORMAT} checkpoint of at most ${MAX_PREPARED_CLAIMS} claims`,
      );
    }
    for (const c of doc.claims) {
      if (!validClaim(c)) throw new Error(`${this.path} holds a malformed claim entry`);
      this.claims.set(c.uid, c);
    }
  }

  get(uid: string): PreparedClaim | undefined {
    return this.claims.get(uid);
  }

  all(): PreparedClaim[] {
    return [...this.claims.values()];
  }

  get size(): number {
    return this.claims.size;
  }

  /** Whether put(uid) would be accepted (the claim is recorded, or there is room for it). */
  hasRoom(uid: string): boolean {
    return this.claims.has(uid) || this.claims.size < MAX_PREPARED_CLAIMS;
  }

  /** Records a prepared claim durably (replacing an earlier record of the same UID). */
  put(c: PreparedClaim): void {
    if (!this.hasRoom(c.uid)) {
      throw new Error(`this node already has ${MAX_PREPARED_CLAIMS} prepared claims (the limit)`);
    }
    this.claims.set(c.uid, c);
    this.save();
  }

  /** Forgets a claim durably; returns whether it was recorded. */
  delete(uid: string): boolean {
    const had = this.claims.delete(uid);
    if (had) this.save();
    return had;
  }

  private save(): void {
    writeFileAtomic(this.path, JSON.stringify({ format: FORMAT, claims: this.all() }), 0o600);
  }
}
