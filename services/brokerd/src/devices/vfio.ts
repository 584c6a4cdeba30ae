// The vfio backend: PCI functions bound to vfio-pci (optionally bound here through
// driver_override), each opened once at start (vfio-open.ts: group/container/type1, or the iommufd
// cdev where the group API is absent, or the fds a previous brokerd handed over), with what the
// kernel can give probed at open (vfio-probe.ts) and each Mapping's fd made by vfio-backings.ts:
// a DMABUF slice, the device fd (only when policy sets allowDeviceFd), or sysfs resourceN(_wc),
// never two families on one BAR (bar-families.ts). It composes those and answers the Backend
// interface (backend.ts), ReadRegion/WriteRegion, and the fds to park for a successor.
// Never sends the device fd unless the request says allowDeviceFd, and never closes a device fd
// before close() (a close resets the device under its users).
import { readSync, writeSync } from "node:fs";
import { ioctl } from "@vfio-broker/native";
import { notFound, precondition } from "../errors.js";
import type { AttributeCheck, Backend, Backing, BackingKind, BackingRequest, DeviceInfo } from "./backend.js";
import type { BackingFamily } from "./bar-families.js";
import { verifyPciAttribute } from "./pci-attribute.js";
import { PciFunction, SYSFS_PCI_DEVICES } from "./pci-function.js";
import { normalizeBdf } from "./pci-resources.js";
import { regionName } from "./regions.js";
import { defaultLog, type Log } from "./sysfs.js";
import { exportDmabuf, openVfioBacking } from "./vfio-backings.js";
import { bindToVfioPci, type VfioDevice, VfioOpener, vfioFdName } from "./vfio-open.js";
import { offeredBackingKinds, type VfioFeatures } from "./vfio-probe.js";
import * as uapi from "./vfio-uapi.js";

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

export class VfioBackend implements Backend {
  readonly name = "vfio";
  readonly mode = "vfio";
  readonly backingKinds = ["dmabuf", "sysfs-wc", "sysfs", "vfio-device-fd"] as const;
  private readonly devs = new Map<string, VfioDevice>();
  private readonly goneCallbacks: ((id: string) => void)[] = [];
  private readonly log: Log;
  private readonly opener: VfioOpener;

  constructor(private readonly opts: VfioBackendOptions) {
    this.log = opts.log ?? defaultLog;
    this.opener = new VfioOpener(opts.devRoot ?? "/dev/vfio", opts.inherited ?? new Map());
    try {
      for (const raw of opts.devices) if (!this.devs.has(normalizeBdf(raw))) this.attach(raw);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Opens one more function through VFIO (binding it to vfio-pci first when `bind`). */
  attach(raw: string): DeviceInfo {
    const bdf = normalizeBdf(raw);
    if (this.devs.has(bdf)) throw precondition(`${bdf} is served by the vfio backend already`);
    const fn = new PciFunction(bdf, this.opts.sysfsRoot ?? SYSFS_PCI_DEVICES);
    if (fn.driver() !== "vfio-pci") {
      if (!this.opts.bind)
        throw precondition(
          `${bdf} is bound to "${fn.driver() || "no driver"}", not vfio-pci; bind it (echo vfio-pci > ${fn.dir}/driver_override; ` +
            `echo ${bdf} > /sys/bus/pci/drivers_probe) or start brokerd with --vfio-bind`,
          "vfio_unbound",
        );
      bindToVfioPci(fn, this.log);
    }
    const d = this.opener.open(fn, this.name, this.log);
    this.devs.set(bdf, d);
    return d.info;
  }

  /**
   * Stops serving `id`: closes its device fd (vfio-pci then resets the device and, on 7.x, lets go
   * of its BARs) and its group's when it was the group's last. Only with nothing mapped.
   */
  detach(id: string): void {
    const d = this.dev(id);
    this.devs.delete(id);
    this.opener.closeFds(d);
    d.fn.close();
    this.log(`vfio: ${id}: device fd closed (no longer served through VFIO)`);
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
    return exportDmabuf(this.dev(deviceId), regionIndex, offset, length, prot);
  }

  /** VFIO_DEVICE_RESET on brokerd's device fd (revokes the device's dma-bufs). Throws when the device has no reset. */
  resetDevice(deviceId: string): void {
    const d = this.dev(deviceId);
    try {
      ioctl(d.fd, uapi.VFIO_DEVICE_RESET);
    } catch (e) {
      throw precondition(
        `${deviceId}: VFIO_DEVICE_RESET failed: ${uapi.errno(e)} (no FLR/PM/bus reset for this function?)`,
        "reset",
      );
    }
  }

  /** Backing kinds that can actually be given now: dmabuf only where a CPU mmap of one was proven. */
  offeredBackingKinds(): BackingKind[] {
    return offeredBackingKinds([...this.devs.values()].map((d) => d.features));
  }

  devices(): DeviceInfo[] {
    return [...this.devs.values()].map((d) => d.info);
  }

  device(id: string): DeviceInfo | undefined {
    return this.devs.get(id)?.info;
  }

  private dev(id: string): VfioDevice {
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
    return openVfioBacking(this.dev(req.deviceId), req, this.log);
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

  /** Every fd whose closing would reset a device or drop its IOMMU setup: for the fdstore and a successor. */
  parkedFds(): { name: string; fd: number }[] {
    const out = this.opener.parkedGroupFds();
    for (const d of this.devs.values()) {
      out.push({ name: vfioFdName("device", d.fn.bdf), fd: d.fd });
      if (d.iommufd !== undefined) out.push({ name: vfioFdName("iommufd", d.fn.bdf), fd: d.iommufd });
    }
    return out;
  }

  close(): void {
    for (const d of this.devs.values()) {
      this.opener.closeFds(d);
      d.fn.close();
    }
    this.devs.clear();
  }
}
