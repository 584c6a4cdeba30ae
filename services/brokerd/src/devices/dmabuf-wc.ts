// The optional WC backing of mode vfio, for a future kernel: a VFIO DMABUF slice whose CPU mmap the
// kernel maps write-combining. No uAPI for asking for that is settled (the dma-buf mmap series
// dropped its WC memory attribute after v4; its later versions are unmerged), so brokerd passes
// no attribute and asks nothing: it probes, once when the device is opened, what the kernel really
// books in x86 PAT for a one-page dma-buf mmap of a prefetchable BAR, and offers WC through a
// dmabuf backing only where that is write-combining. No kernel known to this brokerd passes (none
// even lets the CPU map a VFIO dma-buf: vfio-probe.ts's dmabufMmap), so this path has never run on
// a kernel that has the feature; a kernel that wants an attribute flag is reported as having none.
// Never keeps what it probed with, and never offers WC its probe did not see booked.
import { constants } from "node:fs";
import { closeFd, ioctl, mmap, PAGE_SIZE } from "@vfio-broker/native";
import { verifyPciAttribute } from "./pci-attribute.js";
import type { PciFunction } from "./pci-function.js";
import * as uapi from "./vfio-uapi.js";

/**
 * A read-only dma-buf of the first page of `bar` (VFIO_DEVICE_FEATURE DMA_BUF), close-on-exec; the
 * caller closes it. Throws the ioctl's error. The one export both kernel probes make.
 */
export function exportFirstPage(devFd: number, bar: number): number {
  return ioctl(
    devFd,
    uapi.VFIO_DEVICE_FEATURE,
    uapi.packDmaBufExport(
      bar,
      [{ offset: 0n, length: BigInt(PAGE_SIZE) }],
      constants.O_RDONLY | uapi.O_CLOEXEC,
    ),
  );
}

/** Pure: whether the PAT types booked over a probed dma-buf page show a write-combining mapping. */
export function patShowsWc(patTypes: readonly string[]): boolean {
  return patTypes.includes("write-combining");
}

/**
 * Probes a DMABUF WC mapping on an open device (only call it where dma-bufs CPU-map). Returns
 * whether the kernel booked write-combining for it and, when not, why, for the notes.
 */
export function probeDmabufWc(
  fn: PciFunction,
  devFd: number,
  vfioRegions: Map<number, uapi.VfioRegionInfo>,
): { wc: boolean; note: string } {
  const bar = [...vfioRegions.entries()].find(
    ([i, r]) => i <= 5 && fn.bar(i)?.prefetchable && r.size >= BigInt(PAGE_SIZE),
  )?.[0];
  if (bar === undefined)
    return { wc: false, note: "no DMABUF WC: no prefetchable BAR of a page or more to probe" };
  let fd: number;
  try {
    fd = exportFirstPage(devFd, bar);
  } catch (e) {
    return { wc: false, note: `no DMABUF WC: the probe's export failed (${uapi.errno(e)})` };
  }
  try {
    const m = mmap(fd, 0, PAGE_SIZE, "r");
    try {
      const v = verifyPciAttribute(fn, bar, 0n, BigInt(PAGE_SIZE));
      if (v.unavailable !== "") return { wc: false, note: `no DMABUF WC: cannot tell (${v.unavailable})` };
      return patShowsWc(v.patTypes)
        ? { wc: true, note: "" }
        : {
            wc: false,
            note: `no DMABUF WC: a dma-buf mmap is booked ${v.patTypes.join(",") || "as nothing"}; no settled uAPI asks for WC`,
          };
    } finally {
      m.unmap();
    }
  } catch (e) {
    return { wc: false, note: `no DMABUF WC: the probe's mmap failed (${uapi.errno(e)})` };
  } finally {
    closeFd(fd);
  }
}
