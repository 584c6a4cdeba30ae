// Admission: the checks a mapping request must pass before anything is charged or opened: the
// attribute and prot are given, the range lies in the region on page boundaries, the region can
// have the attribute (or UC with fallback) and the prot, the device is healthy, and the pages are
// not booked with another attribute (saying so when a revoked mapping's holder still has them).
// Pure: no I/O, no state of its own; policy decisions are the Guard's (core/context.ts).
import type { Attribute, DeviceHealth, Prot, RegionInfo } from "../devices/backend.js";
import { invalid, precondition, unavailable } from "../errors.js";
import type { AttributeMap } from "./attribute-map.js";
import { type HoldBook, heldMessage } from "./holds.js";
import { checkMappingRange } from "./range.js";

export function requireAttribute(attribute: Attribute | undefined): Attribute {
  if (!attribute) throw invalid("attribute is required: ATTRIBUTE_UC or ATTRIBUTE_WC", "attribute_missing");
  return attribute;
}

export function requireProt(prot: Prot | undefined): Prot {
  if (!prot) throw invalid("prot is required: PROT_READ or PROT_READ_WRITE", "prot_missing");
  return prot;
}

/** The region can have `attribute` at all (or UC instead, when fallback is allowed). */
export function checkCapability(
  deviceId: string,
  region: RegionInfo,
  attribute: Attribute,
  allowFallback: boolean,
): void {
  if (!region.attributes.includes(attribute) && !(allowFallback && region.attributes.includes("UC")))
    throw invalid(
      `${deviceId} ${region.name} cannot be mapped ${attribute}: it allows ${region.attributes.join(", ")}` +
        `${region.prefetchable ? "" : " (it is not a prefetchable BAR)"}; request ${region.attributes[0] ?? "UC"}, or set allow_fallback`,
      "attribute_unsupported",
    );
}

/** Everything about a new mapping that needs neither the policy nor the pages. */
export function checkRequest(
  deviceId: string,
  region: RegionInfo,
  r: { offset: bigint; length: bigint; attribute: Attribute; prot: Prot; allowFallback: boolean },
  pageSize: bigint,
  health: DeviceHealth,
): void {
  checkMappingRange(deviceId, region, r.offset, r.length, pageSize);
  checkCapability(deviceId, region, r.attribute, r.allowFallback);
  if (r.prot === "rw" && !region.writable)
    throw invalid(`${region.name} is read-only; request PROT_READ`, "prot");
  if (health !== "healthy")
    throw unavailable(`device ${deviceId} is ${health}; no new mappings`, `device_${health}`);
}

/**
 * The AttributeMap's check; when it refuses because a revoked mapping whose holder has not
 * unmapped it still holds some of the pages, the refusal says so (reason held_by_revoked). The
 * holds are looked at only then: a grant costs nothing more for them.
 */
export function checkPages(
  attrs: AttributeMap,
  holds: HoldBook,
  region: RegionInfo,
  range: { offset: bigint; length: bigint },
  attribute: Attribute,
  pageSize: bigint,
): void {
  try {
    attrs.check(region.index, region.name, range.offset, range.length, attribute);
  } catch (e) {
    const h =
      holds.size > 0
        ? holds.conflict(attrs.deviceId, region.index, range.offset, range.length, attribute, pageSize)
        : undefined;
    if (h) throw precondition(heldMessage(h, Date.now()), "held_by_revoked");
    throw e;
  }
}
