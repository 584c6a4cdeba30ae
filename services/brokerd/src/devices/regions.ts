// VFIO region indices and names (linux/vfio.h VFIO_PCI_*_REGION_INDEX), and the units we print.
// Pure values: no I/O.
import type { RegionInfo } from "./backend.js";

export const REGION_NAMES = ["BAR0", "BAR1", "BAR2", "BAR3", "BAR4", "BAR5", "ROM", "CONFIG", "VGA"] as const;
export type RegionName = (typeof REGION_NAMES)[number];
export const NUM_REGIONS = REGION_NAMES.length;
export const CONFIG_REGION_INDEX = 7;

/** The config-space region of a PCI function: read/write through brokerd only, never mmapped. */
export function configRegionInfo(size: bigint): RegionInfo {
  return {
    index: CONFIG_REGION_INDEX,
    name: "CONFIG",
    size,
    readable: true,
    writable: true,
    mappable: false,
    prefetchable: false,
    attributes: [],
    sparseAreas: [],
  };
}

export function regionName(index: number): string {
  return REGION_NAMES[index] ?? `REGION${index}`;
}

/** Accepts "BAR2", "bar2", "2", "config". Returns the VFIO index or undefined. */
export function parseRegion(text: string): number | undefined {
  const t = text.trim().toUpperCase();
  if (/^\d+$/.test(t)) return Number(t);
  const i = REGION_NAMES.indexOf(t as RegionName);
  return i >= 0 ? i : undefined;
}

/** "16 MiB", "4 KiB", "100 B": for messages a person reads. */
export function formatBytes(n: bigint | number): string {
  const v = BigInt(n);
  const units: [bigint, string][] = [
    [1n << 40n, "TiB"],
    [1n << 30n, "GiB"],
    [1n << 20n, "MiB"],
    [1n << 10n, "KiB"],
  ];
  for (const [size, unit] of units) if (v >= size && v % size === 0n) return `${v / size} ${unit}`;
  return `${v} B`;
}

export function hex(n: bigint | number): string {
  return `0x${BigInt(n).toString(16)}`;
}
