// Opening a vfio device: binding a PCI function to vfio-pci, then its device fd through the legacy
// group/container/type1 API (a group and its container shared by the functions of one IOMMU group)
// or, where the group API is absent, the iommufd cdev bound to a fresh IOAS; or the fds a previous
// brokerd handed over, used as they are. Then the device and region info by ioctl (sparse-mmap
// capability included), the feature probe (vfio-probe.ts), and the DeviceInfo brokerd offers.
// Owns the group, container, device and iommufd fds it opened until close; never closes a device
// fd it was handed over except at close (a close resets the device under its users), and never
// makes a Mapping's fd (vfio-backings.ts does).
import { closeSync, constants, existsSync, openSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ioctl } from "@vfio-broker/native";
import { precondition } from "../errors.js";
import type { DeviceInfo } from "./backend.js";
import { BarFamilies } from "./bar-families.js";
import type { PciFunction } from "./pci-function.js";
import { formatBytes } from "./regions.js";
import type { Log } from "./sysfs.js";
import { offeredRegions, probeFeatures, type VfioFeatures, vfioModeNotes } from "./vfio-probe.js";
import * as uapi from "./vfio-uapi.js";

/** One open device: what brokerd holds for it and what the kernel can give for it. */
export interface VfioDevice {
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

/** A VFIO group and its container (type1 IOMMU set), shared by the devices of one IOMMU group. */
export interface GroupHandle {
  id: number;
  fd: number;
  container: number;
  users: number;
}

/** The fds of one device as opened, before its info is read. */
interface DeviceFds {
  fd: number;
  group: GroupHandle | undefined;
  iommufd: number | undefined;
  api: "group" | "cdev";
  cdev: boolean;
}

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

/**
 * Opens device fds through whichever API the kernel has, and owns the groups (with their
 * containers) and the fds a previous brokerd left that are not taken yet.
 */
export class VfioOpener {
  private readonly groups = new Map<number, GroupHandle>();

  constructor(
    private readonly devRoot: string,
    private readonly inherited: Map<string, number>,
  ) {}

  /**
   * Opens `fn`'s device with its info, probes the kernel's features for it and logs what it found.
   * Closes what it opened when anything fails.
   */
  open(fn: PciFunction, backend: string, log: Log): VfioDevice {
    const t0 = performance.now();
    const notes: string[] = [];
    const h = this.openFds(fn, notes);
    try {
      const { numRegions, numIrqs, vfioRegions } = readRegions(h.fd);
      const features = probeFeatures(fn, h.fd, vfioRegions, h, notes);
      const regions = offeredRegions(fn, vfioRegions, features);
      const info: DeviceInfo = {
        id: fn.bdf,
        backend,
        vendorId: fn.vendorId,
        deviceId: fn.deviceId,
        description: `PCI ${fn.bdf} [${fn.vendorId.toString(16).padStart(4, "0")}:${fn.deviceId.toString(16).padStart(4, "0")}] via vfio-pci (${h.api}${h.group ? ` ${h.group.id}` : ""})`,
        regions,
        mode: "vfio",
        modeNotes: vfioModeNotes(features),
      };
      log(
        `vfio: ${fn.bdf} opened through the ${h.api} API in ${(performance.now() - t0).toFixed(1)} ms: ${numRegions} regions, ` +
          `${numIrqs} irqs; ` +
          regions
            .map((r) => `${r.name} ${formatBytes(r.size)} ${r.attributes.join("/") || "rw-only"}`)
            .join(", "),
      );
      for (const n of notes) log(`vfio: ${fn.bdf}: feature absent: ${n}`);
      return {
        fn,
        info,
        fd: h.fd,
        group: h.group,
        vfioRegions,
        families: new BarFamilies(fn.bdf),
        features,
        ...(h.iommufd !== undefined ? { iommufd: h.iommufd } : {}),
      };
    } catch (e) {
      this.closeFds(h);
      throw e;
    }
  }

  /** Closes a device's own fds and drops its use of its group (closed with the last device). */
  closeFds(d: Pick<VfioDevice, "fd" | "group" | "iommufd">): void {
    closeSync(d.fd);
    if (d.iommufd !== undefined) closeSync(d.iommufd);
    if (d.group) this.releaseGroup(d.group);
  }

  /** The group and container fds, by hand-over name: closing them would drop the IOMMU setup. */
  parkedGroupFds(): { name: string; fd: number }[] {
    const out: { name: string; fd: number }[] = [];
    for (const g of this.groups.values())
      out.push(
        { name: vfioFdName("group", String(g.id)), fd: g.fd },
        { name: vfioFdName("container", String(g.id)), fd: g.container },
      );
    return out;
  }

  /** The device fd (and iommufd) of `fn`: taken over, or opened through the group API, else the cdev. */
  private openFds(fn: PciFunction, notes: string[]): DeviceFds {
    const cdev = this.cdevPath(fn);
    if (!cdev)
      notes.push(
        "no iommufd cdev (/dev/vfio/devices/vfioN absent: kernel without CONFIG_VFIO_DEVICE_CDEV/IOMMUFD)",
      );
    const groupId = fn.iommuGroup();
    const groupNode =
      groupId !== undefined &&
      (existsSync(join(this.devRoot, String(groupId))) ||
        existsSync(join(this.devRoot, `noiommu-${groupId}`)));
    const keptDevice = this.take(vfioFdName("device", fn.bdf));
    const keptIommufd = this.take(vfioFdName("iommufd", fn.bdf));
    const opened = (fds: Omit<DeviceFds, "cdev">): DeviceFds => ({ ...fds, cdev: cdev !== undefined });
    // The group API is preferred where it exists: it can give each device-fd mapping its own fd.
    if (keptDevice !== undefined && (groupNode || !cdev)) {
      const group = this.openGroup(fn);
      if (keptIommufd !== undefined) closeSync(keptIommufd);
      notes.push("device fd taken over from the previous brokerd (never closed: no reset)");
      return opened({ fd: keptDevice, group, iommufd: undefined, api: "group" });
    }
    if (keptDevice !== undefined) {
      notes.push("device fd taken over from the previous brokerd (never closed: no reset)");
      return opened({ fd: keptDevice, group: undefined, iommufd: keptIommufd, api: "cdev" });
    }
    if (groupNode || !cdev) {
      const group = this.openGroup(fn);
      try {
        const fd = ioctl(group.fd, uapi.VFIO_GROUP_GET_DEVICE_FD, uapi.packDeviceName(fn.bdf));
        return opened({ fd, group, iommufd: undefined, api: "group" });
      } catch (e) {
        this.releaseGroup(group);
        throw precondition(
          `VFIO_GROUP_GET_DEVICE_FD(${fn.bdf}) failed: ${uapi.errno(e)} (is another process using the device?)`,
          "vfio_open",
        );
      }
    }
    const { fd, iommufd } = this.openCdev(cdev);
    return opened({ fd, group: undefined, iommufd, api: "cdev" });
  }

  private cdevPath(fn: PciFunction): string | undefined {
    const d = join(fn.dir, "vfio-dev");
    if (!existsSync(d)) return undefined;
    const name = readdirSync(d).find((n) => n.startsWith("vfio"));
    return name && existsSync(join(this.devRoot, "devices", name))
      ? join(this.devRoot, "devices", name)
      : undefined;
  }

  /** The function's group, opened once per IOMMU group with its container set up (type1v2, type1, noiommu). */
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
      setIommu(container);
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

  /** An inherited fd by name, taken out of the inherited set (undefined if none). */
  private take(name: string): number | undefined {
    const fd = this.inherited.get(name);
    this.inherited.delete(name);
    return fd;
  }
}

/** Sets the first IOMMU type the container offers that brokerd knows on a container with a group. */
function setIommu(container: number): void {
  const type = [uapi.VFIO_TYPE1v2_IOMMU, uapi.VFIO_TYPE1_IOMMU, uapi.VFIO_NOIOMMU_IOMMU].find(
    (t) => ioctl(container, uapi.VFIO_CHECK_EXTENSION, t) > 0,
  );
  if (type === undefined)
    throw precondition(`the VFIO container offers no IOMMU type brokerd knows (type1v2, type1, noiommu)`);
  try {
    ioctl(container, uapi.VFIO_SET_IOMMU, type);
  } catch (e) {
    throw precondition(
      `VFIO_SET_IOMMU(${type}) failed: ${uapi.errno(e)}; without interrupt remapping vfio_iommu_type1 refuses it ` +
        `(enable it, or set vfio_iommu_type1 allow_unsafe_interrupts=1); see dmesg`,
      "set_iommu",
    );
  }
}

/** VFIO_DEVICE_GET_INFO and the info of every region that has a size. */
function readRegions(fd: number): {
  numRegions: number;
  numIrqs: number;
  vfioRegions: Map<number, uapi.VfioRegionInfo>;
} {
  const di = uapi.packDeviceInfo();
  ioctl(fd, uapi.VFIO_DEVICE_GET_INFO, di);
  const dinfo = uapi.unpackDeviceInfo(di);
  const vfioRegions = new Map<number, uapi.VfioRegionInfo>();
  for (let i = 0; i < dinfo.numRegions; i++) {
    const r = regionInfo(fd, i);
    if (r && r.size > 0n) vfioRegions.set(i, r);
  }
  return { numRegions: dinfo.numRegions, numIrqs: dinfo.numIrqs, vfioRegions };
}

/** VFIO_DEVICE_GET_REGION_INFO, again with the size the kernel asks for when it has capabilities. */
function regionInfo(fd: number, index: number): uapi.VfioRegionInfo | undefined {
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
