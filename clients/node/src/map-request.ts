// map-request.ts: owns what a map() or mapMany() asks for (MapOptions, MapSpec) and its check and
// translation into what CreateMapping and an FdGrant both carry (MapRequest), with the request id
// that makes a retry after a brokerd restart return the same mapping. Pure logic: no I/O; it
// never talks to brokerd and never holds a mapping.
import { randomUUID } from "node:crypto";
import {
  type AttributeName,
  attributeToPb,
  type DeviceFileRegion,
  type ProtName,
  protToPb,
} from "./convert.js";

export interface MapOptions {
  /** Offset inside the region, bytes (page aligned). Default 0. */
  offset?: bigint | number;
  /** Bytes (page aligned). Default: the rest of the region from `offset`. */
  length?: bigint | number;
  /** Default "uc". */
  attr?: AttributeName;
  /** Default "rw". */
  prot?: ProtName;
  /** If the host cannot give `attr`, map UC instead of failing (the Mapping says why). */
  allowFallback?: boolean;
  /**
   * Keep the backing fd (Mapping.fd, close-on-exec) to hand to another process. Such a mapping is
   * not released on brokerd when it is revoked: the process it went to may still map it, so its
   * pages stay booked (a hold) until this process releases it, closes its device file or exits.
   */
  keepFd?: boolean;
}

/** One mapping of a mapMany() call: map()'s arguments in one object. */
export interface MapSpec extends MapOptions {
  region: DeviceFileRegion | string | number;
}

export interface MapRequest {
  region: DeviceFileRegion;
  attr: AttributeName;
  keepFd: boolean;
  /** What CreateMappingRequest and FdGrant both carry. */
  request: {
    deviceFileId: bigint;
    regionIndex: number;
    offset: bigint;
    length: bigint;
    attribute: ReturnType<typeof attributeToPb>;
    prot: ReturnType<typeof protToPb>;
    allowFallback: boolean;
    requestId: string;
  };
}

/** Checks a map() request (`what` names the call in errors) on region `r` of device file `deviceFileId`. */
export function mapRequest(
  what: string,
  deviceFileId: bigint,
  r: DeviceFileRegion,
  opts: MapOptions,
): MapRequest {
  const offset = BigInt(opts.offset ?? 0);
  if (offset < 0n) throw new RangeError(`${what}: offset must not be negative, got ${offset}`);
  if (opts.length === undefined && offset >= r.size)
    throw new RangeError(
      `${what}: offset ${offset} is at or past the end of ${r.name} (${r.size} bytes); pick a smaller offset`,
    );
  const length = opts.length === undefined ? r.size - offset : BigInt(opts.length);
  if (length <= 0n) throw new RangeError(`${what}: length must be positive, got ${length}`);
  if (length > BigInt(Number.MAX_SAFE_INTEGER))
    throw new RangeError(
      `${what}: length ${length} is too large to map into this process; map a smaller range`,
    );
  const attr = opts.attr ?? "uc";
  const prot = opts.prot ?? "rw";
  return {
    region: r,
    attr,
    keepFd: opts.keepFd ?? false,
    // The same request id on every retry (brokerd restarted before replying): one mapping, not two.
    request: {
      deviceFileId,
      regionIndex: r.index,
      offset,
      length,
      attribute: attributeToPb(attr),
      prot: protToPb(prot),
      allowFallback: opts.allowFallback ?? false,
      requestId: randomUUID(),
    },
  };
}
