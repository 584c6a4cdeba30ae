// verifyPciAttribute: the memory types the kernel booked (x86 PAT, debugfs pat_memtype_list) for a
// range of a PCI function's BAR, i.e. the effective attribute of live mappings as the kernel sees
// it, for both PCI backends. Reads the list; parsing is pat.ts's. Never changes a mapping and never
// fails for want of debugfs: it says why the list is unavailable instead.
import { readFileSync } from "node:fs";
import { invalid } from "../errors.js";
import type { Attribute, AttributeCheck } from "./backend.js";
import { attributeOfPatType, PAT_MEMTYPE_LIST, parsePatMemtypeList, patTypesIn } from "./pat.js";
import type { PciFunction } from "./pci-function.js";
import { formatBytes, hex, regionName } from "./regions.js";

/**
 * Reads the x86 PAT memtype list (debugfs) and reports the memory types booked for
 * [BAR start + offset, + length) of a PCI function: the effective attribute of live mappings, as
 * the kernel sees it. Needs root and debugfs mounted at /sys/kernel/debug.
 */
export function verifyPciAttribute(
  fn: PciFunction,
  regionIndex: number,
  offset: bigint,
  length: bigint,
  patList = PAT_MEMTYPE_LIST,
): AttributeCheck {
  const r = fn.bar(regionIndex);
  if (!r || r.size === 0n || !r.mem)
    throw invalid(`${fn.bdf} ${regionName(regionIndex)} is not a memory BAR`);
  if (offset < 0n || length <= 0n || offset + length > r.size)
    throw invalid(
      `${hex(offset)}+${hex(length)} is outside ${regionName(regionIndex)} (${formatBytes(r.size)})`,
    );
  const physStart = r.start + offset;
  let text: string;
  try {
    text = readFileSync(patList, "utf8");
  } catch (e) {
    return {
      physStart,
      length,
      patTypes: [],
      attributes: [],
      unavailable: `${patList} is unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): mount debugfs (mount -t debugfs none /sys/kernel/debug) on an x86 host, as root`,
    };
  }
  const patTypes = patTypesIn(parsePatMemtypeList(text), physStart, length);
  const attributes = [
    ...new Set(patTypes.map(attributeOfPatType).filter((a): a is Attribute => a !== undefined)),
  ];
  return { physStart, length, patTypes, attributes, unavailable: "" };
}
