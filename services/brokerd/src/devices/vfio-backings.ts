// The backings of the vfio backend: how the fd of a Mapping is made for each backing kind, and
// which kind a request gets. A BAR is backed by one of two families, never both at once:
//   - "vfio": a DMABUF slice (where the kernel exports one that can be mmapped) or the VFIO device
//     fd at the region offset — the latter ONLY when policy sets allowDeviceFd, because it hands over
//     the whole device (every region, config space, reset, IRQs). Its kind "vfio-device-fd" shows in
//     the API, the audit log and metrics.
//   - "sysfs": the function's resourceN / resourceN_wc files (sysfs-backing.ts).
// The first live mapping of a BAR fixes its family (bar-families.ts); a conflicting request gets
// FAILED_PRECONDITION. Also exports dma-bufs for DMA importers.
// Never sends the device fd unless the request says allowDeviceFd; never opens or closes the
// device itself (vfio-open.ts does), and never gives WC that a probe did not prove (vfio-probe.ts,
// dmabuf-wc.ts).
import { constants } from "node:fs";
import { closeFd, ioctl, mmap, PAGE_SIZE } from "@vfio-broker/native";
import { BrokerError, denied, invalid, precondition } from "../errors.js";
import type { Attribute, Backing, BackingRequest } from "./backend.js";
import { fdBacking } from "./backing.js";
import { hex, regionName } from "./regions.js";
import type { Log } from "./sysfs.js";
import { openSysfsBacking } from "./sysfs-backing.js";
import type { VfioDevice } from "./vfio-open.js";
import * as uapi from "./vfio-uapi.js";

/** Chooses and opens the backing of one mapping of `d` (see Backend.openBacking). */
export function openVfioBacking(d: VfioDevice, req: BackingRequest, log: Log): Backing {
  const bar = req.region.index;
  if (!req.region.mappable || bar > 5)
    throw invalid(`${req.deviceId} ${req.region.name} cannot be mmapped; use ReadRegion/WriteRegion`);
  const held = d.families.family(bar);
  if (req.attribute === "WB")
    throw invalid(
      `${req.deviceId} ${req.region.name}: WB is only for simulated memory; request UC or WC`,
      "attribute_unsupported",
    );

  // WC: sysfs resourceN_wc; or a DMABUF slice where the probe saw the kernel map one WC
  // (dmabuf-wc.ts: no kernel known here does).
  if (req.attribute === "WC") {
    if (d.features.dmabufWc && req.region.prefetchable && held !== "sysfs") {
      d.families.check(bar, "vfio");
      const b = tryDmabuf(d, req, "", log, "WC");
      if (b) return b;
    }
    if (held === "vfio") {
      if (!req.allowFallback) d.families.check(bar, "sysfs", "a WC mapping (WC needs sysfs resourceN_wc)");
      return vfioBacking(
        d,
        req,
        `${req.region.name} is mapped through VFIO, which maps BARs uncached; WC would need sysfs resource${bar}_wc, which the kernel refuses while vfio-pci holds the BAR; mapped UC`,
        log,
      );
    }
    if (!d.features.sysfsWhileOpen) {
      if (!req.allowFallback)
        throw precondition(
          `${req.deviceId} ${req.region.name}: WC needs sysfs resource${bar}_wc, and this kernel refuses sysfs mmaps while the VFIO device is open (vfio-pci claims the BARs at open); request UC, or set allow_fallback`,
          "attribute_unavailable",
        );
      return vfioBacking(
        d,
        req,
        `this kernel's vfio-pci claims ${req.region.name} while the device is open, so sysfs resource${bar}_wc cannot be mapped; mapped UC through VFIO`,
        log,
      );
    }
    return sysfsBacking(d, req);
  }
  // UC: keep the family in force; else the least privilege the policy allows: a DMABUF slice, the
  // device fd (policy opted in), else sysfs resourceN.
  if (held === "sysfs") return sysfsBacking(d, req);
  if (held === "vfio") return vfioBacking(d, req, "", log);
  // (where the kernel maps dma-bufs WC, one cannot give UC)
  if (d.features.dmabuf && d.features.dmabufMmap === true && !d.features.dmabufWc) {
    const b = tryDmabuf(d, req, "", log);
    if (b) return b;
  }
  if (req.allowDeviceFd || !d.features.sysfsWhileOpen) return vfioBacking(d, req, "", log);
  return sysfsBacking(d, req);
}

/** The sysfs family: resourceN_wc or resourceN, holding the BAR for sysfs until released. */
function sysfsBacking(d: VfioDevice, req: BackingRequest): Backing {
  const bar = req.region.index;
  d.families.check(bar, "sysfs");
  const b = openSysfsBacking(d.fn, req, () => d.families.release(bar, "sysfs"));
  d.families.acquire(bar, "sysfs");
  return b;
}

/** The vfio family: a DMABUF slice where possible, else the device fd (policy permitting). */
function vfioBacking(d: VfioDevice, req: BackingRequest, fallbackReason: string, log: Log): Backing {
  const bar = req.region.index;
  d.families.check(bar, "vfio");
  const effective: Attribute = "UC";
  if (d.features.dmabuf && d.features.dmabufMmap === true && !d.features.dmabufWc) {
    const b = tryDmabuf(d, req, fallbackReason, log);
    if (b) return b;
  }
  if (!req.allowDeviceFd)
    throw d.families.family(bar) === "vfio"
      ? precondition(
          `${req.deviceId} ${req.region.name} is mapped through VFIO by ${d.families.refs(bar)} live mapping(s), and the only VFIO ` +
            `backing this kernel offers is the whole device fd, which the policy does not allow you; sysfs resource${bar} ` +
            `would be refused by the kernel while vfio-pci holds the BAR. Try again once those mappings are released`,
          "backing_family_conflict",
        )
      : denied(
          `${req.deviceId} ${req.region.name}: the only backing left is the whole VFIO device fd, which the policy does not allow you (allowDeviceFd)`,
          "policy:device_fd",
        );
  if (d.features.api !== "group" || !d.group)
    throw new BrokerError(
      "FAILED_PRECONDITION",
      `${req.deviceId} is open through the iommufd cdev, which allows one device fd; brokerd keeps it. Use a sysfs or DMABUF backing`,
      "device_fd_unavailable",
    );
  const r = d.vfioRegions.get(bar);
  if (!r?.mappable)
    throw invalid(
      `${req.deviceId} ${req.region.name}: vfio-pci does not allow mmap of this region (no VFIO_REGION_INFO_FLAG_MMAP)`,
    );
  if (
    r.sparseAreas.length > 0 &&
    !r.sparseAreas.some((a) => req.offset >= a.offset && req.offset + req.length <= a.offset + a.size)
  )
    throw invalid(
      `${req.deviceId} ${req.region.name} ${hex(req.offset)}+${hex(req.length)} is outside its mmap-able areas ` +
        `(${r.sparseAreas.map((a) => `${hex(a.offset)}+${hex(a.size)}`).join(", ")}); choose a range inside one`,
      "sparse_mmap",
    );
  // A fresh device fd per mapping (the group API allows several; the device stays enabled through
  // brokerd's own fd, so no reset happens here), so releasing one mapping closes exactly its fd.
  let fd: number;
  try {
    fd = ioctl(d.group.fd, uapi.VFIO_GROUP_GET_DEVICE_FD, uapi.packDeviceName(d.fn.bdf));
  } catch (e) {
    throw new BrokerError(
      "INTERNAL",
      `VFIO_GROUP_GET_DEVICE_FD(${d.fn.bdf}) failed: ${uapi.errno(e)}`,
      "vfio_open",
    );
  }
  d.families.acquire(bar, "vfio");
  return fdBacking("vfio-device-fd", fd, r.offset + req.offset, req.length, effective, fallbackReason, () =>
    d.families.release(bar, "vfio"),
  );
}

/** Exports [offset, +length) of the BAR as a DMABUF and checks that it mmaps; undefined if not. */
function tryDmabuf(
  d: VfioDevice,
  req: BackingRequest,
  fallbackReason: string,
  log: Log,
  effective: Attribute = "UC",
): Backing | undefined {
  const bar = req.region.index;
  let fd: number;
  try {
    const flags = (req.prot === "rw" ? constants.O_RDWR : constants.O_RDONLY) | uapi.O_CLOEXEC;
    fd = ioctl(
      d.fd,
      uapi.VFIO_DEVICE_FEATURE,
      uapi.packDmaBufExport(bar, [{ offset: req.offset, length: req.length }], flags),
    );
  } catch (e) {
    log(
      `vfio: ${d.fn.bdf}: DMABUF export of ${req.region.name} failed (${uapi.errno(e)}); using the other backings`,
    );
    d.features.dmabufMmap = false;
    return undefined;
  }
  try {
    mmap(fd, 0, PAGE_SIZE, req.prot).unmap();
    d.features.dmabufMmap = true;
  } catch (e) {
    closeFd(fd);
    if (d.features.dmabufMmap === undefined) {
      d.features.dmabufMmap = false;
      d.features.notes.push(`DMABUF slices cannot be mmapped on this kernel (${uapi.errno(e)})`);
      log(`vfio: ${d.fn.bdf}: feature absent: DMABUF mmap (${uapi.errno(e)}); using the device fd or sysfs`);
    }
    return undefined;
  }
  d.families.acquire(bar, "vfio");
  return fdBacking("dmabuf", fd, 0n, req.length, effective, fallbackReason, () =>
    d.families.release(bar, "vfio"),
  );
}

/**
 * Exports [offset, +length) of a BAR as a dma-buf for DMA importers (not for CPU mapping: see
 * VfioFeatures.dmabufMmap). One range, page-aligned, inside the BAR; the caller owns the fd. The
 * kernel revokes it on device reset, on close of the device and when memory decode is disabled.
 */
export function exportDmabuf(
  d: VfioDevice,
  regionIndex: number,
  offset: bigint,
  length: bigint,
  prot: "r" | "rw",
): number {
  const deviceId = d.fn.bdf;
  if (!d.features.dmabuf)
    throw precondition(
      `${deviceId}: the kernel has no VFIO DMABUF export (VFIO_DEVICE_FEATURE_DMA_BUF, Linux 6.19+)`,
      "dmabuf_unsupported",
    );
  const r = d.vfioRegions.get(regionIndex);
  if (regionIndex > 5 || !r || !d.fn.bar(regionIndex)?.mem)
    throw invalid(`${deviceId} ${regionName(regionIndex)} is not a memory BAR`);
  const page = BigInt(PAGE_SIZE);
  if (length <= 0n || offset < 0n || offset % page !== 0n || length % page !== 0n || offset + length > r.size)
    throw invalid(
      `${deviceId} ${regionName(regionIndex)}: [${offset}, +${length}) is not a page-aligned range inside the BAR`,
    );
  const flags = (prot === "rw" ? constants.O_RDWR : constants.O_RDONLY) | uapi.O_CLOEXEC;
  try {
    return ioctl(
      d.fd,
      uapi.VFIO_DEVICE_FEATURE,
      uapi.packDmaBufExport(regionIndex, [{ offset, length }], flags),
    );
  } catch (e) {
    throw precondition(
      `${deviceId}: VFIO DMABUF export of ${regionName(regionIndex)} failed: ${uapi.errno(e)}`,
      "dmabuf_export",
    );
  }
}
