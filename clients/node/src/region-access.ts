// region-access.ts: owns where a DeviceFile's ReadRegion/WriteRegion go (AccessTarget) and the
// translation of an offset inside one of its mappings into region space, for a target that has
// the device file's regions but not its mappings (the workload transport's side session). Pure
// logic: no I/O, no state; the chunking and the calls are DeviceFile's.
import type { BrokerService, PromiseClient } from "@vfio-broker/proto";
import { BrokerClientError } from "./errors.js";

/** Where ReadRegion/WriteRegion on a DeviceFile go (Session.access). */
export interface AccessTarget {
  rpc: PromiseClient<typeof BrokerService>;
  deviceFileId: bigint;
  maxAccessBytes: number;
  /**
   * The device file there has this one's regions but not its mappings (the workload transport's
   * side session): an offset inside a mapping is translated to the region's own cookie first.
   */
  regionSpace: boolean;
}

/** What the translation needs of one mapping. */
export interface MappedRange {
  cookie: bigint;
  length: number;
  regionIndex: number;
  regionOffset: bigint;
  prot: string;
}

/**
 * The offset to send to `t`: unchanged, or, where t has no mappings (regionSpace), an offset
 * inside one of `mappings` as the same byte's offset in its region (`regionCookie` of its index
 * plus its offset there). The checks brokerd makes inside a mapping are made here then, with its
 * words: the access stays inside the mapping, and a write needs a read-write one.
 */
export function accessOffset(
  t: AccessTarget,
  mappings: Iterable<MappedRange>,
  regionCookie: (index: number) => bigint,
  offset: bigint,
  length: number,
  write: boolean,
): bigint {
  if (!t.regionSpace) return offset;
  for (const m of mappings) {
    if (offset < m.cookie || offset >= m.cookie + BigInt(m.length)) continue;
    const last = m.cookie + BigInt(m.length) - 1n;
    if (offset + BigInt(length) - 1n > last)
      throw new BrokerClientError(
        "INVALID_ARGUMENT",
        `access 0x${offset.toString(16)}+${length} leaves the entry 0x${m.cookie.toString(16)}-0x${last.toString(16)}; it has ${last - offset + 1n} bytes from there`,
        { method: write ? "WriteRegion" : "ReadRegion" },
      );
    if (write && m.prot !== "rw")
      throw new BrokerClientError(
        "PERMISSION_DENIED",
        `mapping ${m.cookie} is read-only (PROT_READ); write through a PROT_READ_WRITE mapping`,
        { method: "WriteRegion" },
      );
    return regionCookie(m.regionIndex) + m.regionOffset + (offset - m.cookie);
  }
  return offset;
}
