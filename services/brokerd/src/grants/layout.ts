// Layout: where each region sits in a DeviceFile's offset space, and where alias ranges go.
// Pure: takes region descriptions, returns offsets. Legacy puts region i at i << 40 (vfio-pci's
// fixed VFIO_PCI_INDEX_TO_OFFSET, so unmodified code keeps working); compact packs the regions
// from 0, page aligned, as the kernel maple-tree RFC's review asked. Aliases (CreateMapping)
// are allocated above the regions in both layouts.
import type { RegionInfo } from "../devices/backend.js";
import { NUM_REGIONS } from "../devices/regions.js";

export type Layout = "legacy" | "compact";

export const LEGACY_SHIFT = 40n;

export interface RegionPlacement {
  region: RegionInfo;
  /** Compat cookie: the start of the whole region in the device file's space. */
  cookie: bigint;
}

export interface LayoutPlan {
  placements: RegionPlacement[];
  /** Lowest offset an alias range may start at. */
  aliasBase: bigint;
}

export function alignUp(v: bigint, align: bigint): bigint {
  return ((v + align - 1n) / align) * align;
}

export function planLayout(layout: Layout, regions: RegionInfo[], pageSize: bigint): LayoutPlan {
  const sorted = [...regions].sort((a, b) => a.index - b.index);
  if (layout === "legacy") {
    return {
      placements: sorted.map((region) => ({ region, cookie: BigInt(region.index) << LEGACY_SHIFT })),
      aliasBase: BigInt(NUM_REGIONS) << LEGACY_SHIFT,
    };
  }
  let next = 0n;
  const placements: RegionPlacement[] = [];
  for (const region of sorted) {
    placements.push({ region, cookie: next });
    next = alignUp(next + (region.size > 0n ? region.size : 1n), pageSize);
  }
  return { placements, aliasBase: next };
}
