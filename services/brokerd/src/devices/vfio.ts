// The vfio backend: PCI functions bound to vfio-pci (optionally bound here through
// driver_override), opened through the legacy group/container/type1 API (or the iommufd cdev where
// the group API is absent), with device and region info (sparse-mmap capability included) by ioctl.
// A mapping is backed by one of two families per BAR, never both at once:
//   - "vfio": a DMABUF slice (where the kernel exports one that can be mmapped) or the VFIO device
//     fd at the region offset — the latter ONLY when policy sets allowDeviceFd, because it hands over
//     the whole device (every region, config space, reset, IRQs). Its kind "vfio-device-fd" shows in
//     the API, the audit log and metrics.
//   - "sysfs": the function's resourceN / resourceN_wc files (see sysfs.ts).
// Once VFIO has mmapped (or read/written) a BAR, vfio-pci claims it: the kernel refuses new sysfs
// mmaps (EINVAL) and revokes old ones (SIGBUS). So the first live mapping of a BAR fixes its family
// until all its mappings are released, and a conflicting request gets FAILED_PRECONDITION.
// Never sends the device fd unless the request says allowDeviceFd.

import {
  closeSync,
  constants,
  existsSync,
  openSync,
  readdirSync,
  readSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { closeFd, ioctl, mmap, PAGE_SIZE } from "@vfio-broker/native";
import { BrokerError, denied, invalid, notFound, precondition } from "../errors.js";
import type {
  Attribute,
  AttributeCheck,
  Backend,
  Backing,
  BackingKind,
  BackingRequest,
  DeviceInfo,
  RegionInfo,
} from "./backend.js";
import { fdBacking } from "./backing.js";
import { CONFIG_REGION_INDEX, formatBytes, hex, regionName } from "./regions.js";
import {
  chooseSysfsFile,
  defaultLog,
  type Log,
  normalizeBdf,
  PciFunction,
  SYSFS_PCI_DEVICES,
  verifyPciAttribute,
} from "./sysfs.js";
import * as uapi from "./vfio-uapi.js";

const O_CLOEXEC = 0o2000000;

// ---- backing families (pure) -----------------------------------------------------------------------

export type BackingFamily = "vfio" | "sysfs";

/**
 * Which family backs each BAR of one device, and how many live mappings hold it. The first live
 * mapping of a BAR fixes the family; it is free again when the last one is released.
 */
export class BarFamilies {
  private readonly held = new Map<number, { family: BackingFamily; refs: number }>();

  constructor(private readonly deviceId: string) {}

  family(bar: number): BackingFamily | undefined {
    return this.held.get(bar)?.family;
  }

  refs(bar: number): number {
    return this.held.get(bar)?.refs ?? 0;
  }

  /** FAILED_PRECONDITION when `bar` is held by the other family, saying why and what to do. */
  check(
    bar: number,
    family: BackingFamily,
    what = family === "vfio" ? "a VFIO mapping" : "a sysfs mapping",
  ): void {
    const h = this.held.get(bar);
    if (!h || h.family === family) return;
    const name = regionName(bar);
    throw precondition(
      h.family === "vfio"
        ? `${this.deviceId} ${name} is mapped through VFIO by ${h.refs} live mapping(s), so ${what} is refused: ` +
            `the kernel refuses sysfs mmaps of a BAR vfio-pci has mapped and revokes older ones (SIGBUS). ` +
            `Request what VFIO can give (UC, with a policy that allows the device fd), or release the VFIO mappings of ${name} first`
        : `${this.deviceId} ${name} is mapped through sysfs by ${h.refs} live mapping(s), so ${what} is refused: ` +
            `a VFIO mmap of the BAR would make the kernel revoke those mappings (their owners would die of SIGBUS). ` +
            `Request what sysfs can give (UC, or WC on a prefetchable BAR), or release the sysfs mappings of ${name} first`,
      "backing_family_conflict",
    );
  }

  acquire(bar: number, family: BackingFamily): void {
    this.check(bar, family);
    const h = this.held.get(bar);
    if (h) h.refs++;
    else this.held.set(bar, { family, refs: 1 });
  }

  release(bar: number, family: BackingFamily): void {
    const h = this.held.get(bar);
    if (!h || h.family !== family) return;
    if (--h.refs <= 0) this.held.delete(bar);
  }
}

// ---- kernel features ---------------------------------------------------------------------------------

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
  /** A DMABUF slice can be mmapped write-combining. No upstream uapi for it is known to this brokerd. */
  dmabufWc: boolean;
  /** What is absent and why, for the log and the API. */
  notes: string[];
}

interface OpenedDevice {
  fn: PciFunction;
  info: DeviceInfo;
  /** brokerd's own device fd: region info, config access, kept open so the device stays enabled. */
  fd: number;
  group: GroupHandle | undefined;
  vfioRegions: Map<number, uapi.VfioRegionInfo>;
  families: BarFamilies;
  features: VfioFeatures;
  /** cdev mode: the iommufd brokerd bound the device to. */
  iommufd?: number;
}

interface GroupHandle {
  id: number;
  fd: number;
  container: number;
  users: number;
}

export interface VfioBackendOptions {
  devices: string[];
  /** Bind functions that are not on vfio-pci yet through driver_override + drivers_probe. */
  bind?: boolean;
  sysfsRoot?: string;
  /**
   * fds a previous brokerd left open for us (hand-over, fdstore), by name (vfioFdName): a device
   * fd taken over is never closed in between, so the device is not reset under its users.
   */
  inherited?: Map<string, number>;
  /** Default /dev/vfio. */
  devRoot?: string;
  log?: Log;
}

const errno = (e: unknown): string => (e as { code?: string }).code ?? (e as Error).message;

/** Binds a function to vfio-pci: driver_override, unbind from the current driver, drivers_probe. */
export function bindToVfioPci(fn: PciFunction, log: Log): void {
  const before = fn.driver();
  if (before === "vfio-pci") return;
  if (!existsSync("/sys/bus/pci/drivers/vfio-pci"))
    throw precondition(
      `vfio-pci is not loaded; run modprobe vfio-pci, then start brokerd again`,
      "vfio_missing",
    );
  const t0 = performance.now();
  writeFileSync(join(fn.dir, "driver_override"), "vfio-pci");
  if (before) writeFileSync(join(fn.dir, "driver", "unbind"), fn.bdf);
  writeFileSync("/sys/bus/pci/drivers_probe", fn.bdf);
  const after = fn.driver();
  if (after !== "vfio-pci")
    throw precondition(
      `binding ${fn.bdf} to vfio-pci failed (driver now "${after || "none"}"); check dmesg (IOMMU enabled? intel_iommu=on)`,
      "vfio_bind",
    );
  log(
    `vfio: bound ${fn.bdf} to vfio-pci (was ${before || "no driver"}) in ${(performance.now() - t0).toFixed(1)} ms`,
  );
}

/** fdstore/hand-over name of a vfio fd: no ':' (systemd's FDNAME separator), so a BDF gets '.'. */
export function vfioFdName(kind: "group" | "container" | "device" | "iommufd", id: string): string {
  return `vfio-${kind}-${id.replaceAll(":", ".")}`;
}

export class VfioBackend implements Backend {
  readonly name = "vfio";
  readonly backingKinds = ["dmabuf", "sysfs-wc", "sysfs", "vfio-device-fd"] as const;
  private readonly devs = new Map<string, OpenedDevice>();
  private readonly groups = new Map<number, GroupHandle>();
  private readonly goneCallbacks: ((id: string) => void)[] = [];
  private readonly log: Log;
  private readonly devRoot: string;
  private readonly inherited: Map<string, number>;

  constructor(opts: VfioBackendOptions) {
    this.log = opts.log ?? defaultLog;
    this.inherited = opts.inherited ?? new Map();
    this.devRoot = opts.devRoot ?? "/dev/vfio";
    try {
      for (const raw of opts.devices) {
        const bdf = normalizeBdf(raw);
        if (this.devs.has(bdf)) continue;
        const fn = new PciFunction(bdf, opts.sysfsRoot ?? SYSFS_PCI_DEVICES);
        if (fn.driver() !== "vfio-pci") {
          if (!opts.bind)
            throw precondition(
              `${bdf} is bound to "${fn.driver() || "no driver"}", not vfio-pci; bind it (echo vfio-pci > ${fn.dir}/driver_override; ` +
                `echo ${bdf} > /sys/bus/pci/drivers_probe) or start brokerd with --vfio-bind`,
              "vfio_unbound",
            );
          bindToVfioPci(fn, this.log);
        }
        this.devs.set(bdf, this.open(fn));
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  // ---- opening ---------------------------------------------------------------------------------------

  private cdevPath(fn: PciFunction): string | undefined {
    const d = join(fn.dir, "vfio-dev");
    if (!existsSync(d)) return undefined;
    const name = readdirSync(d).find((n) => n.startsWith("vfio"));
    return name && existsSync(join(this.devRoot, "devices", name))
      ? join(this.devRoot, "devices", name)
      : undefined;
  }

  private openGroup(fn: PciFunction): GroupHandle {
    const id = fn.iommuGroup();
    if (id === undefined)
      throw precondition(
        `${fn.bdf} has no IOMMU group; enable the IOMMU (intel_iommu=on / amd_iommu=on)`,
        "no_iommu_group",
      );
    const existing = this.groups.get(id);
    if (existing) {
      existing.users++;
      return existing;
    }
    const keptGroup = this.take(vfioFdName("group", String(id)));
    const keptContainer = this.take(vfioFdName("container", String(id)));
    if (keptGroup !== undefined && keptContainer !== undefined) {
      // Handed over with its container already set up (SET_CONTAINER, SET_IOMMU): use as is.
      const g: GroupHandle = { id, fd: keptGroup, container: keptContainer, users: 1 };
      this.groups.set(id, g);
      return g;
    }
    for (const fd of [keptGroup, keptContainer]) if (fd !== undefined) closeSync(fd);
    let path = join(this.devRoot, String(id));
    if (!existsSync(path) && existsSync(join(this.devRoot, `noiommu-${id}`)))
      path = join(this.devRoot, `noiommu-${id}`);
    const container = openSync(join(this.devRoot, "vfio"), constants.O_RDWR);
    let fd = -1;
    try {
      const api = ioctl(container, uapi.VFIO_GET_API_VERSION);
      if (api !== uapi.VFIO_API_VERSION)
        throw precondition(`VFIO API version ${api}, brokerd speaks ${uapi.VFIO_API_VERSION}`);
      fd = openSync(path, constants.O_RDWR);
      const st = uapi.packGroupStatus();
      ioctl(fd, uapi.VFIO_GROUP_GET_STATUS, st);
      if (!uapi.unpackGroupStatus(st).viable)
        throw precondition(
          `IOMMU group ${id} is not viable: every device in /sys/kernel/iommu_groups/${id}/devices must be bound to vfio-pci or to no driver`,
          "group_not_viable",
        );
      ioctl(fd, uapi.VFIO_GROUP_SET_CONTAINER, uapi.packInt32(container));
      const type = [uapi.VFIO_TYPE1v2_IOMMU, uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_NOIOMMU_IOMMU].find(
        (t) => ioctl(container, uapi.VFIO_CHECK_EXTENSION, t) > 0,
      );
      if (type === undefined)
        throw precondition(`the VFIO container offers no IOMMU type brokerd knows (type1v2, type1, noiommu)`);
      try {
        ioctl(container, uapi.VFIO_SET_IOMMU, type);
      } catch (e) {
        throw precondition(
          `VFIO_SET_IOMMU(${type}) failed: ${errno(e)}; without interrupt remapping vfio_iommu_type1 refuses it ` +
            `(enable it, or set vfio_iommu_type1 allow_unsafe_interrupts=1); see dmesg`,
          "set_iommu",
        );
      }
      const g: GroupHandle = { id, fd, container, users: 1 };
      this.groups.set(id, g);
      return g;
    } catch (e) {
      if (fd >= 0) closeSync(fd);
      closeSync(container);
      throw e;
    }
  }

  private releaseGroup(g: GroupHandle): void {
    if (--g.users > 0) return;
    this.groups.delete(g.id);
    closeSync(g.fd);
    closeSync(g.container);
  }

  /** cdev + iommufd: open the cdev, bind it to a new iommufd, attach it to a fresh IOAS. */
  private openCdev(path: string): { fd: number; iommufd: number } {
    const fd = openSync(path, constants.O_RDWR);
    let iommufd = -1;
    try {
      iommufd = openSync("/dev/iommu", constants.O_RDWR);
      ioctl(fd, uapi.VFIO_DEVICE_BIND_IOMMUFD, uapi.packBindIommufd(iommufd));
      const ioas = uapi.packIoasAlloc();
      ioctl(iommufd, uapi.IOMMU_IOAS_ALLOC, ioas);
      ioctl(fd, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, uapi.packAttachPt(uapi.unpackIoasAlloc(ioas)));
      return { fd, iommufd };
    } catch (e) {
      closeSync(fd);
      if (iommufd >= 0) closeSync(iommufd);
      throw e;
    }
  }

  private open(fn: PciFunction): OpenedDevice {
    const t0 = performance.now();
    const notes: string[] = [];
    const cdev = this.cdevPath(fn);
    if (!cdev)
      notes.push(
        "no iommufd cdev (/dev/vfio/devices/vfioN absent: kernel without CONFIG_VFIO_DEVICE_CDEV/IOMMUFD)",
      );
    let group: GroupHandle | undefined;
    let fd: number;
    let iommufd: number | undefined;
    let api: "group" | "cdev" = "group";
    const groupId = fn.iommuGroup();
    const groupNode =
      groupId !== undefined &&
      (existsSync(join(this.devRoot, String(groupId))) ||
        existsSync(join(this.devRoot, `noiommu-${groupId}`)));
    const keptDevice = this.take(vfioFdName("device", fn.bdf));
    const keptIommufd = this.take(vfioFdName("iommufd", fn.bdf));
    // The group API is preferred where it exists: it can give each device-fd mapping its own fd.
    if (keptDevice !== undefined && (groupNode || !cdev)) {
      group = this.openGroup(fn);
      fd = keptDevice;
      if (keptIommufd !== undefined) closeSync(keptIommufd);
      notes.push("device fd taken over from the previous brokerd (never closed: no reset)");
    } else if (keptDevice !== undefined) {
      fd = keptDevice;
      iommufd = keptIommufd;
      api = "cdev";
      notes.push("device fd taken over from the previous brokerd (never closed: no reset)");
    } else if (groupNode || !cdev) {
      group = this.openGroup(fn);
      try {
        fd = ioctl(group.fd, uapi.VFIO_GROUP_GET_DEVICE_FD, uapi.packDeviceName(fn.bdf));
      } catch (e) {
        this.releaseGroup(group);
        throw precondition(
          `VFIO_GROUP_GET_DEVICE_FD(${fn.bdf}) failed: ${errno(e)} (is another process using the device?)`,
          "vfio_open",
        );
      }
    } else {
      ({ fd, iommufd } = this.openCdev(cdev));
      api = "cdev";
    }
    try {
      const di = uapi.packDeviceInfo();
      ioctl(fd, uapi.VFIO_DEVICE_GET_INFO, di);
      const dinfo = uapi.unpackDeviceInfo(di);
      const vfioRegions = new Map<number, uapi.VfioRegionInfo>();
      for (let i = 0; i < dinfo.numRegions; i++) {
        const r = this.regionInfo(fd, i);
        if (r && r.size > 0n) vfioRegions.set(i, r);
      }
      let dmabuf = false;
      try {
        ioctl(fd, uapi.VFIO_DEVICE_FEATURE, uapi.packFeatureProbe(uapi.VFIO_DEVICE_FEATURE_DMA_BUF));
        dmabuf = true;
      } catch (e) {
        notes.push(
          `no VFIO DMABUF export (VFIO_DEVICE_FEATURE_DMA_BUF probe: ${errno(e)}; needs Linux 6.19+)`,
        );
      }
      notes.push(
        "no DMABUF write-combining mmap attribute (no upstream uapi known to this brokerd): WC goes through sysfs resourceN_wc",
      );
      // the largest memory BAR with a resource file (a sub-page BAR cannot take a one-page probe)
      const probeBar = [...vfioRegions.entries()]
        .filter(
          ([i, r]) => i <= 5 && fn.bar(i)?.mem && fn.hasResourceFile(i, false) && r.size >= BigInt(PAGE_SIZE),
        )
        .sort((a, b) => (a[1].size < b[1].size ? 1 : -1))[0]?.[0];
      const sysfsWhileOpen = probeBar === undefined ? true : this.probeSysfsMmap(fn, probeBar);
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
        dmabufMmap = mbar ? this.probeDmabufMmap(fd, mbar[0]) : undefined;
        if (dmabufMmap === false)
          notes.push(
            `DMABUF slices cannot be mmapped by the CPU on this kernel (${this.lastProbeError}): no dmabuf backing for CPU mappings`,
          );
      }
      const features: VfioFeatures = {
        iommufdCdev: cdev !== undefined,
        api,
        dmabuf,
        dmabufMmap,
        dmabufWc: false,
        sysfsWhileOpen,
        notes,
      };
      const regions = this.brokerRegions(fn, vfioRegions, features);
      const info: DeviceInfo = {
        id: fn.bdf,
        backend: this.name,
        vendorId: fn.vendorId,
        deviceId: fn.deviceId,
        description: `PCI ${fn.bdf} [${fn.vendorId.toString(16).padStart(4, "0")}:${fn.deviceId.toString(16).padStart(4, "0")}] via vfio-pci (${api}${group ? ` ${group.id}` : ""})`,
        regions,
      };
      this.log(
        `vfio: ${fn.bdf} opened through the ${api} API in ${(performance.now() - t0).toFixed(1)} ms: ${dinfo.numRegions} regions, ` +
          `${dinfo.numIrqs} irqs; ` +
          regions
            .map((r) => `${r.name} ${formatBytes(r.size)} ${r.attributes.join("/") || "rw-only"}`)
            .join(", "),
      );
      for (const n of notes) this.log(`vfio: ${fn.bdf}: feature absent: ${n}`);
      return {
        fn,
        info,
        fd,
        group,
        vfioRegions,
        families: new BarFamilies(fn.bdf),
        features,
        ...(iommufd !== undefined ? { iommufd } : {}),
      };
    } catch (e) {
      closeSync(fd);
      if (iommufd !== undefined) closeSync(iommufd);
      if (group) this.releaseGroup(group);
      throw e;
    }
  }

  private lastProbeError = "";

  /** Whether a one-page sysfs resourceN mmap works now (the device fd is open). */
  private probeSysfsMmap(fn: PciFunction, bar: number): boolean {
    try {
      closeFd(fn.openBarFd(bar, false, "r")); // probes with a one-page mmap
      return true;
    } catch (e) {
      // bar_claimed: the kernel refused the mmap (EINVAL); anything else: cannot tell here, and the
      // mapping path reports the real error
      return (e as { reason?: string }).reason !== "bar_claimed";
    }
  }

  /** Exports the first page of `bar` as a DMABUF and tries a CPU mmap of it; closes the dma-buf. */
  private probeDmabufMmap(devFd: number, bar: number): boolean {
    let fd: number;
    try {
      fd = ioctl(
        devFd,
        uapi.VFIO_DEVICE_FEATURE,
        uapi.packDmaBufExport(
          bar,
          [{ offset: 0n, length: BigInt(PAGE_SIZE) }],
          constants.O_RDONLY | O_CLOEXEC,
        ),
      );
    } catch (e) {
      this.lastProbeError = `export: ${errno(e)}`;
      return false;
    }
    try {
      mmap(fd, 0, PAGE_SIZE, "r").unmap();
      return true;
    } catch (e) {
      this.lastProbeError = `mmap: ${errno(e)}`;
      return false;
    } finally {
      closeFd(fd);
    }
  }

  /**
   * Exports [offset, +length) of a BAR as a dma-buf for DMA importers (not for CPU mapping: see
   * VfioFeatures.dmabufMmap). One range, page-aligned, inside the BAR; the caller owns the fd. The
   * kernel revokes it on device reset, on close of the device and when memory decode is disabled.
   */
  exportDmabuf(
    deviceId: string,
    regionIndex: number,
    offset: bigint,
    length: bigint,
    prot: "r" | "rw" = "rw",
  ): number {
    const d = this.dev(deviceId);
    if (!d.features.dmabuf)
      throw precondition(
        `${deviceId}: the kernel has no VFIO DMABUF export (VFIO_DEVICE_FEATURE_DMA_BUF, Linux 6.19+)`,
        "dmabuf_unsupported",
      );
    const r = d.vfioRegions.get(regionIndex);
    if (regionIndex > 5 || !r || !d.fn.bar(regionIndex)?.mem)
      throw invalid(`${deviceId} ${regionName(regionIndex)} is not a memory BAR`);
    const page = BigInt(PAGE_SIZE);
    if (
      length <= 0n ||
      offset < 0n ||
      offset % page !== 0n ||
      length % page !== 0n ||
      offset + length > r.size
    )
      throw invalid(
        `${deviceId} ${regionName(regionIndex)}: [${offset}, +${length}) is not a page-aligned range inside the BAR`,
      );
    const flags = (prot === "rw" ? constants.O_RDWR : constants.O_RDONLY) | O_CLOEXEC;
    try {
      return ioctl(
        d.fd,
        uapi.VFIO_DEVICE_FEATURE,
        uapi.packDmaBufExport(regionIndex, [{ offset, length }], flags),
      );
    } catch (e) {
      throw precondition(
        `${deviceId}: VFIO DMABUF export of ${regionName(regionIndex)} failed: ${errno(e)}`,
        "dmabuf_export",
      );
    }
  }

  /** VFIO_DEVICE_RESET on brokerd's device fd (revokes the device's dma-bufs). Throws when the device has no reset. */
  resetDevice(deviceId: string): void {
    const d = this.dev(deviceId);
    try {
      ioctl(d.fd, uapi.VFIO_DEVICE_RESET);
    } catch (e) {
      throw precondition(
        `${deviceId}: VFIO_DEVICE_RESET failed: ${errno(e)} (no FLR/PM/bus reset for this function?)`,
        "reset",
      );
    }
  }

  /** Backing kinds that can actually be given now: dmabuf only where a CPU mmap of one was proven. */
  offeredBackingKinds(): BackingKind[] {
    const ds = [...this.devs.values()];
    const out: BackingKind[] = [];
    if (ds.some((d) => d.features.dmabufMmap === true)) out.push("dmabuf");
    if (ds.length === 0 || ds.some((d) => d.features.sysfsWhileOpen)) out.push("sysfs-wc", "sysfs");
    out.push("vfio-device-fd");
    return out;
  }

  private regionInfo(fd: number, index: number): uapi.VfioRegionInfo | undefined {
    try {
      let b = uapi.packRegionInfo(index);
      ioctl(fd, uapi.VFIO_DEVICE_GET_REGION_INFO, b);
      let r = uapi.unpackRegionInfo(b);
      if (r.argsz > b.length) {
        b = uapi.packRegionInfo(index, r.argsz);
        ioctl(fd, uapi.VFIO_DEVICE_GET_REGION_INFO, b);
        r = uapi.unpackRegionInfo(b);
      }
      return r;
    } catch {
      return undefined; // e.g. the VGA region of a non-VGA device: EINVAL
    }
  }

  private brokerRegions(
    fn: PciFunction,
    vr: Map<number, uapi.VfioRegionInfo>,
    f: VfioFeatures,
  ): RegionInfo[] {
    const out: RegionInfo[] = [];
    for (const [i, r] of vr) {
      if (i > CONFIG_REGION_INDEX) continue; // VGA and device-specific regions are not brokered
      const bar = i <= 5 ? fn.bar(i) : undefined;
      const isMemBar = !!bar?.mem;
      const mappable = isMemBar && (r.mappable || fn.hasResourceFile(i, false));
      const wc = mappable && ((f.sysfsWhileOpen && fn.hasResourceFile(i, true)) || f.dmabufWc);
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

  // ---- Backend ---------------------------------------------------------------------------------------

  devices(): DeviceInfo[] {
    return [...this.devs.values()].map((d) => d.info);
  }

  private dev(id: string): OpenedDevice {
    const d = this.devs.get(id);
    if (!d) throw notFound(`the vfio backend has no device ${id}`, "unknown_device");
    return d;
  }

  /** Kernel features per device, and what is absent. */
  features(): Record<string, VfioFeatures> {
    return Object.fromEntries(
      [...this.devs].map(([id, d]) => [id, { ...d.features, notes: [...d.features.notes] }]),
    );
  }

  /** Live mappings per BAR and their family, for the operator. */
  families(deviceId: string): Record<string, { family: BackingFamily; refs: number }> {
    const d = this.dev(deviceId);
    const out: Record<string, { family: BackingFamily; refs: number }> = {};
    for (let i = 0; i <= 5; i++) {
      const f = d.families.family(i);
      if (f) out[regionName(i)] = { family: f, refs: d.families.refs(i) };
    }
    return out;
  }

  openBacking(req: BackingRequest): Backing {
    const d = this.dev(req.deviceId);
    const bar = req.region.index;
    if (!req.region.mappable || bar > 5)
      throw invalid(`${req.deviceId} ${req.region.name} cannot be mmapped; use ReadRegion/WriteRegion`);
    const held = d.families.family(bar);
    if (req.attribute === "WB")
      throw invalid(
        `${req.deviceId} ${req.region.name}: WB is only for simulated memory; request UC or WC`,
        "attribute_unsupported",
      );

    // WC: only sysfs resourceN_wc can give it here (no DMABUF WC attribute upstream).
    if (req.attribute === "WC") {
      if (held === "vfio") {
        if (!req.allowFallback) d.families.check(bar, "sysfs", "a WC mapping (WC needs sysfs resourceN_wc)");
        return this.vfioBacking(
          d,
          req,
          `${req.region.name} is mapped through VFIO, which maps BARs uncached; WC would need sysfs resource${bar}_wc, which the kernel refuses while vfio-pci holds the BAR; mapped UC`,
        );
      }
      if (!d.features.sysfsWhileOpen) {
        if (!req.allowFallback)
          throw precondition(
            `${req.deviceId} ${req.region.name}: WC needs sysfs resource${bar}_wc, and this kernel refuses sysfs mmaps while the VFIO device is open (vfio-pci claims the BARs at open); request UC, or set allow_fallback`,
            "attribute_unavailable",
          );
        return this.vfioBacking(
          d,
          req,
          `this kernel's vfio-pci claims ${req.region.name} while the device is open, so sysfs resource${bar}_wc cannot be mapped; mapped UC through VFIO`,
        );
      }
      return this.sysfsBacking(d, req);
    }
    // UC: keep the family in force; else the least privilege the policy allows: a DMABUF slice, the
    // device fd (policy opted in), else sysfs resourceN.
    if (held === "sysfs") return this.sysfsBacking(d, req);
    if (held === "vfio") return this.vfioBacking(d, req, "");
    if (d.features.dmabuf && d.features.dmabufMmap === true) {
      const b = this.tryDmabuf(d, req, "");
      if (b) return b;
    }
    if (req.allowDeviceFd || !d.features.sysfsWhileOpen) return this.vfioBacking(d, req, "");
    return this.sysfsBacking(d, req);
  }

  private sysfsBacking(d: OpenedDevice, req: BackingRequest): Backing {
    const bar = req.region.index;
    d.families.check(bar, "sysfs");
    const c = chooseSysfsFile(d.fn, req);
    const fd = d.fn.openBarFd(bar, c.wc, req.prot);
    d.families.acquire(bar, "sysfs");
    return fdBacking(
      c.wc ? "sysfs-wc" : "sysfs",
      fd,
      req.offset,
      req.length,
      c.effective,
      c.fallbackReason,
      () => d.families.release(bar, "sysfs"),
    );
  }

  /** The vfio family: a DMABUF slice where possible, else the device fd (policy permitting). */
  private vfioBacking(d: OpenedDevice, req: BackingRequest, fallbackReason: string): Backing {
    const bar = req.region.index;
    d.families.check(bar, "vfio");
    const effective: Attribute = "UC";
    if (d.features.dmabuf && d.features.dmabufMmap === true) {
      const b = this.tryDmabuf(d, req, fallbackReason);
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
        `VFIO_GROUP_GET_DEVICE_FD(${d.fn.bdf}) failed: ${errno(e)}`,
        "vfio_open",
      );
    }
    d.families.acquire(bar, "vfio");
    return fdBacking("vfio-device-fd", fd, r.offset + req.offset, req.length, effective, fallbackReason, () =>
      d.families.release(bar, "vfio"),
    );
  }

  /** Exports [offset, +length) of the BAR as a DMABUF and checks that it mmaps; undefined if not. */
  private tryDmabuf(d: OpenedDevice, req: BackingRequest, fallbackReason: string): Backing | undefined {
    const bar = req.region.index;
    let fd: number;
    try {
      const flags = (req.prot === "rw" ? constants.O_RDWR : constants.O_RDONLY) | 0o2000000; // O_CLOEXEC
      fd = ioctl(
        d.fd,
        uapi.VFIO_DEVICE_FEATURE,
        uapi.packDmaBufExport(bar, [{ offset: req.offset, length: req.length }], flags),
      );
    } catch (e) {
      this.log(
        `vfio: ${d.fn.bdf}: DMABUF export of ${req.region.name} failed (${errno(e)}); using the other backings`,
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
        d.features.notes.push(`DMABUF slices cannot be mmapped on this kernel (${errno(e)})`);
        this.log(
          `vfio: ${d.fn.bdf}: feature absent: DMABUF mmap (${errno(e)}); using the device fd or sysfs`,
        );
      }
      return undefined;
    }
    d.families.acquire(bar, "vfio");
    return fdBacking("dmabuf", fd, 0n, req.length, "UC", fallbackReason, () =>
      d.families.release(bar, "vfio"),
    );
  }

  /**
   * ReadRegion/WriteRegion. Config space (and ROM) through the device fd. BARs through the device
   * fd when VFIO already holds them; otherwise through sysfs, so that an access by brokerd does not
   * make vfio-pci claim the BAR (which would lock out sysfs mappings until brokerd closes the device).
   */
  private access(deviceId: string, regionIndex: number, offset: bigint, buf: Buffer, write: boolean): number {
    const d = this.dev(deviceId);
    const r = d.vfioRegions.get(regionIndex);
    if (!r) throw notFound(`${deviceId} has no ${regionName(regionIndex)}`);
    if (regionIndex <= 5 && d.families.family(regionIndex) !== "vfio" && d.fn.bar(regionIndex)?.mem) {
      try {
        return d.fn.access(regionIndex, offset, buf, write);
      } catch (e) {
        if ((e as { code?: string }).code !== "EINVAL") throw e;
        // vfio-pci holds the BAR already: the device fd is the way.
      }
    }
    const pos = Number(r.offset + offset);
    return write ? writeSync(d.fd, buf, 0, buf.length, pos) : readSync(d.fd, buf, 0, buf.length, pos);
  }

  read(deviceId: string, regionIndex: number, offset: bigint, length: number): Buffer {
    const buf = Buffer.alloc(length);
    return buf.subarray(0, this.access(deviceId, regionIndex, offset, buf, false));
  }

  write(deviceId: string, regionIndex: number, offset: bigint, data: Uint8Array): number {
    return this.access(deviceId, regionIndex, offset, Buffer.from(data), true);
  }

  /** The PAT memory types the kernel holds for a range of a BAR (see verifyPciAttribute). */
  verifyAttribute(deviceId: string, regionIndex: number, offset: bigint, length: bigint): AttributeCheck {
    return verifyPciAttribute(this.dev(deviceId).fn, regionIndex, offset, length);
  }

  onDeviceGone(cb: (deviceId: string) => void): void {
    this.goneCallbacks.push(cb);
  }

  /** An inherited fd by name, taken out of the inherited set (undefined if none). */
  private take(name: string): number | undefined {
    const fd = this.inherited.get(name);
    this.inherited.delete(name);
    return fd;
  }

  /** Every fd whose closing would reset a device or drop its IOMMU setup: for the fdstore and a successor. */
  parkedFds(): { name: string; fd: number }[] {
    const out: { name: string; fd: number }[] = [];
    for (const g of this.groups.values())
      out.push(
        { name: vfioFdName("group", String(g.id)), fd: g.fd },
        { name: vfioFdName("container", String(g.id)), fd: g.container },
      );
    for (const d of this.devs.values()) {
      out.push({ name: vfioFdName("device", d.fn.bdf), fd: d.fd });
      if (d.iommufd !== undefined) out.push({ name: vfioFdName("iommufd", d.fn.bdf), fd: d.iommufd });
    }
    return out;
  }

  close(): void {
    for (const d of this.devs.values()) {
      closeSync(d.fd);
      if (d.iommufd !== undefined) closeSync(d.iommufd);
      if (d.group) this.releaseGroup(d.group);
      d.fn.close();
    }
    this.devs.clear();
  }
}
