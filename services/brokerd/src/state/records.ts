// State records: the durable facts about grants (docs/design.md §3 vocabulary), one per change, and
// their on-disk encoding. A record is one line: 8 hex digits of CRC-32 over the JSON, a space, the
// JSON, "\n". bigints (ids, cookies, offsets) are decimal strings. Pure: no I/O.
import { crc32 } from "node:zlib";
import type { ClaimRec } from "../claims/book.js";
import type { Attribute, BackingKind, DeviceHealth, Prot } from "../devices/backend.js";

/** A session as recorded: enough to recognise its process again after a restart. */
export interface SessionRec {
  id: string;
  /** sha256 of the resume token (the token itself is only ever in Hello's reply). */
  tokenHash: string;
  uid: number;
  gid: number;
  pid: number;
  /** /proc/<pid>/stat starttime (clock ticks since boot): pid + start time name one process. */
  startTime: string;
  cgroup: string;
  groups: number[];
  pidfdSource: "SO_PEERPIDFD" | "pidfd_open";
  clientName: string;
  openedAt: number;
}

export interface DeviceFileRec {
  id: string;
  session: string;
  device: string;
  layout: string;
  openedAt: number;
  /** The OpenDevice request id it answered ("" if none), so a retried OpenDevice gets it again. */
  requestId: string;
}

export interface MappingRec {
  df: string;
  cookie: string;
  region: number;
  offset: string;
  length: string;
  requested: Attribute;
  effective: Attribute;
  fallbackReason: string;
  prot: Prot;
  kind: BackingKind;
  state: "pending" | "delivered";
  /** The ticket while pending (this file is root-only), so a client can redeem it after a restart. */
  ticket: string;
  expiresAt: number;
  rule: string;
  requestId: string;
  createdAt: number;
  /** CreateMapping references on the cookie (absent in stores written before refcounts: 1). */
  refs?: number;
}

/**
 * A revoked mapping whose holder may still map it (grants/holds.ts): its pages and quota stay
 * booked across a restart until that process (pid + start time) exits or releases it.
 */
export interface HoldRec {
  id: string;
  pid: number;
  startTime: string;
  uid: number;
  session: string;
  df: string;
  cookie: string;
  device: string;
  region: number;
  regionName: string;
  offset: string;
  length: string;
  attribute: Attribute;
  prot: Prot;
  kind: BackingKind;
  refs: number;
  quotaKeys: string[];
  rule: string;
  reason: string;
  since: number;
  enforceAt: number;
  enforceBy: string;
}

export type StateRecord =
  | { t: "run"; run: number; pid: number; at: number; bootId: string }
  | { t: "session.open"; s: SessionRec }
  | { t: "session.name"; id: string; clientName: string }
  | { t: "session.end"; id: string }
  | { t: "df.open"; d: DeviceFileRec }
  | { t: "df.close"; id: string }
  | { t: "map.create"; m: MappingRec }
  | {
      t: "map.update";
      df: string;
      cookie: string;
      requested: Attribute;
      effective: Attribute;
      fallbackReason: string;
      kind: BackingKind;
      rule: string;
    }
  /**
   * A delivery. `ticket`: another reference's ticket that is still live (its own fd to fetch),
   * "" or absent when none.
   */
  | { t: "map.deliver"; df: string; cookie: string; ticket?: string }
  /** The reference count changed (a CreateMapping of the same mapping, or a ReleaseMapping of one). */
  | { t: "map.refs"; df: string; cookie: string; refs: number; ticket: string; expiresAt: number }
  | { t: "map.release"; df: string; cookie: string }
  /** A hold made (written before its mapping's map.release), or its enforcement changed. */
  | { t: "hold"; h: HoldRec }
  | { t: "hold.end"; id: string }
  | { t: "health"; device: string; health: DeviceHealth }
  /** A Kubernetes claim bound (or bound again: it replaces), and unbound (claims/book.ts). */
  | { t: "claim.bind"; c: ClaimRec }
  | { t: "claim.unbind"; uid: string };

/** Where in which file a record failed to decode, and why. */
export class RecordError extends Error {}

/** "00".."ff": a byte as two lower-case hex digits. */
const HEX2 = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/** n (an unsigned 32-bit integer) as 8 lower-case hex digits. */
export function hex8(n: number): string {
  // Four table lookups: toString(16) of a number over 2^30 is V8's floating-point radix conversion
  // (fmod per digit), which showed in brokerd's profile at one CRC per state record.
  return HEX2[n >>> 24]! + HEX2[(n >>> 16) & 255]! + HEX2[(n >>> 8) & 255]! + HEX2[n & 255]!;
}

export function crcHex(text: string): string {
  // zlib's crc32 takes a string as its UTF-8 bytes (no Buffer made for it here).
  return hex8(crc32(text));
}

export function encodeRecord(r: StateRecord): string {
  const json = JSON.stringify(r);
  return `${crcHex(json)} ${json}\n`;
}

/**
 * The lines of recs, in order, as the bytes of one write(2): each record's JSON written once, as
 * UTF-8, into one buffer, its CRC taken over those bytes and its 8 hex digits put in front (no line
 * string, no concatenation, no second UTF-8 encoding); byte for byte encodeRecord's lines.
 */
export function encodeRecordsBytes(recs: readonly StateRecord[]): Buffer {
  const jsons: string[] = new Array(recs.length);
  let size = 0;
  for (let i = 0; i < recs.length; i++) {
    const json = JSON.stringify(recs[i]);
    jsons[i] = json;
    size += Buffer.byteLength(json) + 10; // "xxxxxxxx " and "\n"
  }
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < jsons.length; i++) {
    const body = at + 9;
    const end = body + out.write(jsons[i]!, body);
    const crc = crc32(out.subarray(body, end));
    out.write(hex8(crc), at, 8, "latin1");
    out[at + 8] = 0x20;
    out[end] = 0x0a;
    at = end + 1;
  }
  return out;
}

const TYPES = new Set([
  "run",
  "session.open",
  "session.name",
  "session.end",
  "df.open",
  "df.close",
  "map.create",
  "map.update",
  "map.deliver",
  "map.refs",
  "map.release",
  "hold",
  "hold.end",
  "health",
  "claim.bind",
  "claim.unbind",
]);

/** One line (without its "\n") back to a record; throws RecordError saying what is wrong. */
export function decodeRecord(line: string): StateRecord {
  const m = /^([0-9a-f]{8}) (.*)$/s.exec(line);
  if (!m) throw new RecordError("not a record line (expected 8 hex digits of CRC-32, a space, JSON)");
  if (crcHex(m[2]!) !== m[1]) throw new RecordError("CRC-32 mismatch (the line was changed or damaged)");
  let r: unknown;
  try {
    r = JSON.parse(m[2]!);
  } catch (e) {
    throw new RecordError(`bad JSON: ${(e as Error).message}`);
  }
  const t = (r as { t?: unknown } | null)?.t;
  if (typeof t !== "string" || !TYPES.has(t))
    throw new RecordError(`unknown record type ${JSON.stringify(t)}`);
  return r as StateRecord;
}

/**
 * Splits a log's text into records. A last line without its "\n" is a write cut short by a crash:
 * no reply ever depended on it (the reply follows the whole write), so it is returned as `torn`
 * and dropped. Any other bad line is damage and throws, naming the line.
 */
export function decodeLog(text: string): { records: StateRecord[]; torn: string } {
  const lines = text.split("\n");
  const torn = lines.pop() ?? "";
  const records: StateRecord[] = [];
  lines.forEach((l, i) => {
    try {
      records.push(decodeRecord(l));
    } catch (e) {
      throw new RecordError(`line ${i + 1}: ${(e as Error).message}`);
    }
  });
  return { records, torn };
}
