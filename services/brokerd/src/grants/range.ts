// Validation of a requested region range: the checks every CreateMapping, ReadRegion and
// WriteRegion goes through before anything is allocated. Pure; errors say what to change.
import type { RegionInfo } from "../devices/backend.js";
import { formatBytes, hex } from "../devices/regions.js";
import { invalid } from "../errors.js";

export const U64_MAX = (1n << 64n) - 1n;

/** Checks a mapping range: non-zero, page aligned, inside the region (and a sparse area), no overflow. */
export function checkMappingRange(
  deviceId: string,
  region: RegionInfo,
  offset: bigint,
  length: bigint,
  pageSize: bigint,
): void {
  const where = `${deviceId} ${region.name}`;
  if (!region.mappable)
    throw invalid(`${where} cannot be mmapped; use ReadRegion/WriteRegion for it`, "region_not_mappable");
  if (offset < 0n || offset > U64_MAX || length < 0n || length > U64_MAX)
    throw invalid(`offset and length must be unsigned 64-bit values`, "range");
  if (length === 0n) throw invalid(`length is 0; ask for at least one page (${pageSize} bytes)`, "range");
  if (offset % pageSize !== 0n)
    throw invalid(
      `offset ${hex(offset)} is not a multiple of the ${pageSize}-byte page; use ${hex(offset - (offset % pageSize))}`,
      "range",
    );
  if (length % pageSize !== 0n)
    throw invalid(
      `length ${length} is not a multiple of the ${pageSize}-byte page; round up to ${length + pageSize - (length % pageSize)}`,
      "range",
    );
  if (offset + length > U64_MAX + 1n)
    throw invalid(`offset ${hex(offset)} + length ${hex(length)} overflows 64 bits`, "range");
  if (offset + length > region.size) {
    const room = offset < region.size ? region.size - offset : 0n;
    throw invalid(
      `range ${hex(offset)}+${hex(length)} passes the end of ${where} (${formatBytes(region.size)}); ` +
        (room > 0n
          ? `the largest length at offset ${hex(offset)} is ${room}`
          : `offsets must be below ${hex(region.size)}`),
      "range",
    );
  }
  if (region.sparseAreas.length > 0) {
    const inside = region.sparseAreas.some((a) => offset >= a.offset && offset + length <= a.offset + a.size);
    if (!inside)
      throw invalid(
        `range ${hex(offset)}+${hex(length)} of ${where} is not inside one mmap-able area; areas: ` +
          region.sparseAreas.map((a) => `${hex(a.offset)}+${hex(a.size)}`).join(", "),
        "range",
      );
  }
}

/** Checks a small access (ReadRegion/WriteRegion) of `length` bytes at `offset` into a span of `span` bytes. */
export function checkAccess(
  what: string,
  offset: bigint,
  length: number,
  span: bigint,
  maxBytes: number,
): void {
  if (length <= 0) throw invalid(`length must be at least 1 byte`, "range");
  if (length > maxBytes)
    throw invalid(`${length} bytes is more than the ${maxBytes}-byte limit per access; split it`, "range");
  if (offset + BigInt(length) > span)
    throw invalid(
      `access ${hex(offset)}+${length} passes the end of ${what} (${formatBytes(span)}); it has ${span > offset ? span - offset : 0n} bytes from there`,
      "range",
    );
}
