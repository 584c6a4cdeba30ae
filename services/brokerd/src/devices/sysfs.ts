// The sysfs backend: PCI functions named by BDF in the configuration, reached through
// /sys/bus/pci/devices/<bdf>/ (pci-function.ts): regions from `resource` (and `config`), mappings
// backed by per-BAR fds (`resourceN` for UC, `resourceN_wc` for WC on prefetchable BARs; see
// sysfs-backing.ts), unplugged functions noticed by polling. Also owns the backends' log type.
// Never takes a function a kernel driver drives (that would race the driver), never hands out a
// device fd, and never disables a function it did not enable itself.
import { invalid, notFound, precondition } from "../errors.js";
import type { AttributeCheck, Backend, Backing, BackingRequest, DeviceInfo } from "./backend.js";
import { verifyPciAttribute } from "./pci-attribute.js";
import { PciFunction } from "./pci-function.js";
import { normalizeBdf } from "./pci-resources.js";
import { formatBytes } from "./regions.js";
import { openSysfsBacking } from "./sysfs-backing.js";

export type Log = (message: string) => void;
export const defaultLog: Log = (m) => console.error(`vfio-brokerd: ${m}`);

export interface SysfsBackendOptions {
  /** BDFs to expose ("0000:3b:00.1"). */
  devices: string[];
  /** Default /sys/bus/pci/devices (tests point it elsewhere). */
  sysfsRoot?: string;
  /** How often to look for hot-unplugged functions, ms (0: never). */
  presencePollMs?: number;
  log?: Log;
}

/** Drivers next to which mapping BARs from userspace is sane (none of them drives the device). */
const HANDS_OFF_DRIVERS = new Set(["", "vfio-pci", "pci-stub", "uio_pci_generic"]);

export class SysfsBackend implements Backend {
  readonly name = "sysfs";
  readonly backingKinds = ["sysfs-wc", "sysfs"] as const;
  private readonly fns = new Map<string, { fn: PciFunction; info: DeviceInfo; enabledByUs: boolean }>();
  private readonly goneCallbacks: ((id: string) => void)[] = [];
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(opts: SysfsBackendOptions) {
    const log = opts.log ?? defaultLog;
    for (const raw of opts.devices) {
      const bdf = normalizeBdf(raw);
      if (this.fns.has(bdf)) continue;
      const fn = new PciFunction(bdf, opts.sysfsRoot);
      const drv = fn.driver();
      if (!HANDS_OFF_DRIVERS.has(drv))
        throw precondition(
          `${bdf} is driven by the kernel driver "${drv}"; mapping its BARs from userspace would race that driver. ` +
            `Unbind it first: echo ${bdf} > /sys/bus/pci/drivers/${drv}/unbind`,
        );
      const regions = fn.sysfsRegions();
      // Only an unbound function is enabled here; vfio-pci, pci-stub and uio manage it themselves.
      const enabledByUs = drv === "" && fn.ensureEnabled();
      if (enabledByUs) log(`sysfs: ${bdf}: enabled the function (sysfs enable = 1) so that its BARs decode`);
      const info: DeviceInfo = {
        id: bdf,
        backend: this.name,
        vendorId: fn.vendorId,
        deviceId: fn.deviceId,
        description: `PCI ${bdf} [${fn.vendorId.toString(16).padStart(4, "0")}:${fn.deviceId.toString(16).padStart(4, "0")}] via sysfs`,
        regions,
      };
      this.fns.set(bdf, { fn, info, enabledByUs });
      log(
        `sysfs: ${bdf} [${info.description}] driver=${drv || "none"}: ` +
          regions
            .map((r) => `${r.name} ${formatBytes(r.size)} ${r.attributes.join("/") || "rw-only"}`)
            .join(", "),
      );
    }
    const pollMs = opts.presencePollMs ?? 2000;
    if (pollMs > 0) {
      this.timer = setInterval(() => this.checkPresence(), pollMs);
      this.timer.unref();
    }
  }

  private checkPresence(): void {
    for (const [id, d] of [...this.fns]) {
      if (d.fn.present) continue;
      for (const cb of this.goneCallbacks) cb(id);
      d.fn.close();
      this.fns.delete(id);
    }
  }

  devices(): DeviceInfo[] {
    return [...this.fns.values()].map((d) => d.info);
  }

  function(deviceId: string): PciFunction {
    const d = this.fns.get(deviceId);
    if (!d) throw notFound(`the sysfs backend has no device ${deviceId}`, "unknown_device");
    return d.fn;
  }

  openBacking(req: BackingRequest): Backing {
    const fn = this.function(req.deviceId);
    if (!req.region.mappable)
      throw invalid(`${req.deviceId} ${req.region.name} cannot be mmapped; use ReadRegion/WriteRegion`);
    return openSysfsBacking(fn, req);
  }

  read(deviceId: string, regionIndex: number, offset: bigint, length: number): Buffer {
    const buf = Buffer.alloc(length);
    const n = this.function(deviceId).access(regionIndex, offset, buf, false);
    return buf.subarray(0, n);
  }

  write(deviceId: string, regionIndex: number, offset: bigint, data: Uint8Array): number {
    return this.function(deviceId).access(regionIndex, offset, Buffer.from(data), true);
  }

  /** The PAT memory types the kernel holds for a range of a BAR (see verifyPciAttribute). */
  verifyAttribute(deviceId: string, regionIndex: number, offset: bigint, length: bigint): AttributeCheck {
    return verifyPciAttribute(this.function(deviceId), regionIndex, offset, length);
  }

  onDeviceGone(cb: (deviceId: string) => void): void {
    this.goneCallbacks.push(cb);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    for (const d of this.fns.values()) {
      d.fn.close();
      if (d.enabledByUs && d.fn.present) d.fn.disable();
    }
    this.fns.clear();
  }
}
