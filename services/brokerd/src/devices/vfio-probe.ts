// The kernel feature probe of the vfio backend: what this kernel can give for one opened device
// (VFIO DMABUF export and whether a dma-buf can be CPU-mmapped, sysfs resourceN mmaps while the
// device fd is open, and so WC through resourceN_wc; a DMABUF WC mmap, dmabuf-wc.ts), found by
// trying it once at open, and what that makes brokerd offer: the attributes per region, the
// backing kinds advertised in Hello and the notes of mode vfio (Device.mode_notes).
// Never keeps an fd it opened to probe, never maps a BAR beyond one page, and never offers
// something a probe did not prove (a dmabuf backing only where a dma-buf mmap worked).
import { closeFd, ioctl, mmap, PAGE_SIZE } from "@vfio-broker/native";
import type { BackingKind, RegionInfo } from "./backend.js";
import { exportFirstPage, probeDmabufWc } from "./dmabuf-wc.js";
import type { PciFunction } from "./pci-function.js";
import { CONFIG_REGION_INDEX, regionName } from "./regions.js";
import * as uapi from "./vfio-uapi.js";

export interface VfioFeatures {
  /** /dev/vfio/devices/vfioN exists for the function (iommufd cdev, CONFIG_VFIO_DEVICE_CDEV). */
  iommufdCdev: boolean;
  /** How brokerd opened the device: "group" (group/container/type1) or "cdev" (iommufd). */
  api: "group" | "cdev";
  /** VFIO_DEVICE_FEATURE_DMA_BUF is supported (Linux 6.19+). */
  dmabuf: boolean;
  /**
   * A DMABUF slice could be mmapped by the CPU: probed at open (one page of the first mappable BAR
   * exported, mmapped, closed). false on every kernel known to this brokerd (7.3 has no dma-buf mmap
   * for vfio-pci); brokerd never offers a dmabuf backing for CPU mapping unless this is true.
   * undefined only when there was no mappable BAR to probe with.
   */
  dmabufMmap: boolean | undefined;
  /**
   * sysfs resourceN mmaps still work while brokerd holds the VFIO device fd. false where vfio-pci
   * claims every BAR when the device fd is opened (Linux 7.x: /proc/iomem shows "vfio" under each
   * BAR and the kernel refuses sysfs mmaps with EINVAL until the last device fd is closed); then this
   * backend can give neither sysfs backings nor WC.
   */
  sysfsWhileOpen: boolean;
  /**
   * A DMABUF slice of a prefetchable BAR is mmapped write-combining: probed (dmabuf-wc.ts) only
   * where dmabufMmap is true, by the PAT type the kernel books; no settled uAPI asks for it.
   */
  dmabufWc: boolean;
  /** What is absent and why, for the log and the API. */
  notes: string[];
}

/**
 * Probes what the kernel gives for a device opened on `fd` (its VFIO regions read), appending to
 * `notes` what is absent and why. `opened` says how the device was opened.
 */
export function probeFeatures(
  fn: PciFunction,
  fd: number,
  vfioRegions: Map<number, uapi.VfioRegionInfo>,
  opened: { cdev: boolean; api: "group" | "cdev" },
  notes: string[],
): VfioFeatures {
  let dmabuf = false;
  try {
    ioctl(fd, uapi.VFIO_DEVICE_FEATURE, uapi.packFeatureProbe(uapi.VFIO_DEVICE_FEATURE_DMA_BUF));
    dmabuf = true;
  } catch (e) {
    notes.push(
      `no VFIO DMABUF export (VFIO_DEVICE_FEATURE_DMA_BUF probe: ${uapi.errno(e)}; needs Linux 6.19+)`,
    );
  }
  // the largest memory BAR with a resource file (a sub-page BAR cannot take a one-page probe)
  const probeBar = [...vfioRegions.entries()]
    .filter(
      ([i, r]) => i <= 5 && fn.bar(i)?.mem && fn.hasResourceFile(i, false) && r.size >= BigInt(PAGE_SIZE),
    )
    .sort((a, b) => (a[1].size < b[1].size ? 1 : -1))[0]?.[0];
  const sysfsWhileOpen = probeBar === undefined ? true : probeSysfsMmap(fn, probeBar);
  if (!sysfsWhileOpen)
    notes.push(
      `no sysfs backings while brokerd holds the device: vfio-pci claimed the BARs when the device fd was opened ` +
        `(sysfs resource${probeBar} mmap refused; Linux 7.x does this), so no WC through resourceN_wc either`,
    );
  let dmabufMmap: boolean | undefined = false;
  if (dmabuf) {
    const mbar = [...vfioRegions.entries()].find(
      ([i, r]) => i <= 5 && fn.bar(i)?.mem && r.size >= BigInt(PAGE_SIZE),
    );
    const refused = mbar ? probeDmabufMmap(fd, mbar[0]) : undefined;
    dmabufMmap = mbar ? refused === "" : undefined;
    if (dmabufMmap === false)
      notes.push(
        `DMABUF slices cannot be mmapped by the CPU on this kernel (${refused}): no dmabuf backing for CPU mappings`,
      );
  }
  // the optional WC backing (dmabuf-wc.ts): only where a dma-buf CPU-maps at all
  const wc =
    dmabufMmap === true
      ? probeDmabufWc(fn, fd, vfioRegions)
      : {
          wc: false,
          note: "no DMABUF write-combining mmap (no settled kernel uAPI; not probed: no dma-buf CPU mmap here)",
        };
  if (!wc.wc) notes.push(`${wc.note}: WC goes through sysfs resourceN_wc`);
  return {
    iommufdCdev: opened.cdev,
    api: opened.api,
    dmabuf,
    dmabufMmap,
    dmabufWc: wc.wc,
    sysfsWhileOpen,
    notes,
  };
}

/** Whether a one-page sysfs resourceN mmap works now (the device fd is open). */
function probeSysfsMmap(fn: PciFunction, bar: number): boolean {
  try {
    closeFd(fn.openBarFd(bar, false, "r")); // probes with a one-page mmap
    return true;
  } catch (e) {
    // bar_claimed: the kernel refused the mmap (EINVAL); anything else: cannot tell here, and the
    // mapping path reports the real error
    return (e as { reason?: string }).reason !== "bar_claimed";
  }
}

/**
 * Exports the first page of `bar` as a DMABUF and tries a CPU mmap of it; closes the dma-buf.
 * "" when the mmap worked, else what failed ("export: E..." or "mmap: E...").
 */
function probeDmabufMmap(devFd: number, bar: number): string {
  let fd: number;
  try {
    fd = exportFirstPage(devFd, bar);
  } catch (e) {
    return `export: ${uapi.errno(e)}`;
  }
  try {
    mmap(fd, 0, PAGE_SIZE, "r").unmap();
    return "";
  } catch (e) {
    return `mmap: ${uapi.errno(e)}`;
  } finally {
    closeFd(fd);
  }
}

/**
 * The regions brokerd offers for a device (BARs, ROM, config; not VGA or device-specific ones), with
 * the attributes this kernel can give an mmap of each: WC only through sysfs resourceN_wc while the
 * device is open (or a DMABUF WC attribute, which no kernel has yet).
 */
export function offeredRegions(
  fn: PciFunction,
  vfioRegions: Map<number, uapi.VfioRegionInfo>,
  f: VfioFeatures,
): RegionInfo[] {
  const out: RegionInfo[] = [];
  for (const [i, r] of vfioRegions) {
    if (i > CONFIG_REGION_INDEX) continue; // VGA and device-specific regions are not brokered
    const bar = i <= 5 ? fn.bar(i) : undefined;
    const isMemBar = !!bar?.mem;
    const mappable = isMemBar && (r.mappable || fn.hasResourceFile(i, false));
    const wc =
      mappable && ((f.sysfsWhileOpen && fn.hasResourceFile(i, true)) || (f.dmabufWc && !!bar?.prefetchable));
    out.push({
      index: i,
      name: regionName(i),
      size: r.size,
      readable: r.readable,
      writable: r.writable && i !== 6,
      mappable,
      prefetchable: !!bar?.prefetchable,
      attributes: mappable ? (wc ? ["UC", "WC"] : ["UC"]) : [],
      sparseAreas: r.sparseAreas.map((a) => ({ offset: a.offset, size: a.size })),
    });
  }
  return out.sort((a, b) => a.index - b.index);
}

/** Backing kinds that can actually be given on these devices: dmabuf only where a CPU mmap of one was proven. */
export function offeredBackingKinds(features: VfioFeatures[]): BackingKind[] {
  const out: BackingKind[] = [];
  if (features.some((f) => f.dmabufMmap === true)) out.push("dmabuf");
  if (features.length === 0 || features.some((f) => f.sysfsWhileOpen)) out.push("sysfs-wc", "sysfs");
  out.push("vfio-device-fd");
  return out;
}

/** What mode "vfio" cannot give on this kernel for a device with these features (Device.mode_notes). */
export function vfioModeNotes(f: VfioFeatures): string[] {
  const out: string[] = [];
  if (!f.sysfsWhileOpen)
    out.push(
      "no WC in mode vfio on this kernel: vfio-pci claimed every BAR when brokerd opened the device fd " +
        "(Linux 7.1+), so resourceN_wc cannot be mapped while brokerd holds it; mode sysfs-wc gives WC",
    );
  if (!f.dmabufWc)
    out.push(
      "no DMABUF write-combining attribute (no settled kernel uAPI): WC only through sysfs resourceN_wc",
    );
  if (f.dmabuf && f.dmabufMmap === false)
    out.push("VFIO DMABUF export works but a dma-buf cannot be CPU-mapped: no dmabuf backing for mappings");
  return out;
}
