// The workload protocol's two hot requests read straight off the wire: a frame that is exactly one
// WorkloadRequest.grant (FdGrant) or WorkloadRequest.release (FdRelease), as libvfio-broker and
// the Node client send them, decoded without protobuf-es's reflection and its string walk. It
// answers only for the plain shape: one outer field spanning the frame, known inner fields with
// their own wire types, varints that fit their types, strings of printable ASCII within their
// limits (rpc/strings.ts). Anything else (unknown or repeated outer fields, big or negative
// numbers, other bytes in strings, a string over its limit) is left to the general decode
// (fdpass/workload-decode.ts), which gives it its meaning and its error. What it returns is what
// protobuf-es's fromBinary returns for the same bytes (workload-fast-decode.property.test.ts).
// Pure: no I/O.
import { type FdGrant, FdGrantSchema, type FdRelease, FdReleaseSchema } from "@vfio-broker/proto";
import { limitOf, stringProblem } from "../rpc/strings.js";

const TOKEN_OF_GRANT = limitOf(FdGrantSchema, FdGrantSchema.field.sessionToken);
const REQUEST_ID = limitOf(FdGrantSchema, FdGrantSchema.field.requestId);
const TOKEN_OF_RELEASE = limitOf(FdReleaseSchema, FdReleaseSchema.field.sessionToken);

/** WorkloadRequest's grant (19) and release (20), length-delimited: their tags' varints. */
const GRANT_TAG = (19 << 3) | 2;
const RELEASE_TAG = (20 << 3) | 2;

export type FastRequest = { case: "grant"; value: FdGrant } | { case: "release"; value: FdRelease };

/** Where the reader is; a failed read sets it past every end (FAIL). */
let at = 0;
const FAIL = Number.MAX_SAFE_INTEGER;

/** A varint of at most 7 bytes, below 2^49 (else FAIL: the general decode takes bigger ones). */
function varint(b: Uint8Array, end: number): number {
  let v = 0;
  let scale = 1;
  for (let i = 0; i < 7; i++) {
    if (at >= end) break;
    const x = b[at++]!;
    v += (x & 0x7f) * scale;
    if (x < 0x80) return v;
    scale *= 128;
  }
  at = FAIL; // over 7 bytes (2^49 and up), or cut short
  return 0;
}

/** A length-delimited string of printable ASCII (else FAIL). */
function ascii(b: Uint8Array, end: number): string {
  const n = varint(b, end);
  if (at + n > end) {
    at = FAIL;
    return "";
  }
  let s = "";
  for (let i = at; i < at + n; i++) {
    const c = b[i]!;
    if (c < 0x21 || c > 0x7e) {
      at = FAIL;
      return "";
    }
    s += String.fromCharCode(c);
  }
  at += n;
  return s;
}

function grant(b: Uint8Array, end: number): FdGrant | undefined {
  const g = {
    $typeName: "vfiobroker.v1.FdGrant",
    sessionToken: "",
    deviceFileId: 0n,
    regionIndex: 0,
    offset: 0n,
    length: 0n,
    attribute: 0,
    prot: 0,
    allowFallback: false,
    requestId: "",
  };
  while (at < end) {
    const tag = varint(b, end);
    if (at >= end) return undefined; // a tag with nothing after it, or a bad one
    switch (tag) {
      case (1 << 3) | 2:
        g.sessionToken = ascii(b, end);
        break;
      case (9 << 3) | 2:
        g.requestId = ascii(b, end);
        break;
      case 2 << 3:
        g.deviceFileId = BigInt(varint(b, end));
        break;
      case 3 << 3: {
        const v = varint(b, end);
        if (v > 0xffffffff) return undefined;
        g.regionIndex = v;
        break;
      }
      case 4 << 3:
        g.offset = BigInt(varint(b, end));
        break;
      case 5 << 3:
        g.length = BigInt(varint(b, end));
        break;
      case 6 << 3:
      case 7 << 3: {
        const v = varint(b, end);
        if (v > 0x7fffffff) return undefined; // an int32 enum: big ones are negative there
        if (tag === 6 << 3) g.attribute = v;
        else g.prot = v;
        break;
      }
      case 8 << 3:
        g.allowFallback = varint(b, end) !== 0;
        break;
      default:
        return undefined;
    }
  }
  if (at !== end) return undefined;
  if (stringProblem(g.sessionToken, TOKEN_OF_GRANT) !== "" || stringProblem(g.requestId, REQUEST_ID) !== "")
    return undefined;
  return g as FdGrant;
}

function release(b: Uint8Array, end: number): FdRelease | undefined {
  const r = { $typeName: "vfiobroker.v1.FdRelease", sessionToken: "", deviceFileId: 0n, cookie: 0n };
  while (at < end) {
    const tag = varint(b, end);
    if (at >= end) return undefined;
    if (tag === ((1 << 3) | 2)) r.sessionToken = ascii(b, end);
    else if (tag === 2 << 3) r.deviceFileId = BigInt(varint(b, end));
    else if (tag === 3 << 3) r.cookie = BigInt(varint(b, end));
    else return undefined;
  }
  if (at !== end || stringProblem(r.sessionToken, TOKEN_OF_RELEASE) !== "") return undefined;
  return r as FdRelease;
}

/** The frame's grant or release if it has the plain shape; undefined: decode it the general way. */
export function fastRequest(b: Uint8Array): FastRequest | undefined {
  at = 0;
  const tag = varint(b, b.length);
  if (tag !== GRANT_TAG && tag !== RELEASE_TAG) return undefined;
  const n = varint(b, b.length);
  if (at >= FAIL || at + n !== b.length) return undefined;
  if (tag === GRANT_TAG) {
    const value = grant(b, b.length);
    return value && { case: "grant", value };
  }
  const value = release(b, b.length);
  return value && { case: "release", value };
}
