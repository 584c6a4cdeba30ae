// The sysfs backend: PCI functions named by BDF in the configuration, reached through
// /sys/bus/pci/devices/<bdf>/ (pci-function.ts): regions from `resource` (and `config`), mappings
// backed by per-BAR fds (`resourceN` for UC, `resourceN_wc` for WC on prefetchable BARs; see
// sysfs-backing.ts), unplugged functions noticed by polling. Also owns the backends' log type.
// Never takes a function a kernel driver drives (that would race the driver), never hands out a
// device fd, never opens anything under /dev/vfio (mode "sysfs-wc": a function bound to vfio-pci
// stays unopened), and never disables a function it did not enable itself.
import { invalid, notFound, precondition } from "../errors.js";
import type { AttributeCheck, Backend, Backing, BackingRequest, DeviceInfo } from "./backend.js";
import { verifyPciAttribute } from "./pci-attribute.js";
import { PciFunction } from "./pci-function.js";
import { normalizeBdf } from "./pci-resources.js";
import { formatBytes } from "./regions.js";
import { openSysfsBacking } from "./sysfs-backing.js";
import { type FunctionUndo, handsOffFunction, probeSysfsRegions, undoHandsOff } from "./sysfs-probe.js";
import { bindToVfioPci } from "./vfio-open.js";

export type Log = (message: string) => void;
export const defaultLog: Log = (m) => console.error(`vfio-brokerd: ${m}`);

export interface SysfsBackendOptions {
  /** BDFs to expose ("0000:3b:00.1"). */
  devices: string[];
  /**
   * Bind a function that is unbound or driven by a host driver to vfio-pci first (never opened:
   * it only keeps host drivers off); one on pci-stub or uio_pci_generic is left there.
   */
  bind?: boolean;
  /** Default /sys/bus/pci/devices (tests point it elsewhere). */
  sysfsRoot?: string;
  /** How often to look for hot-unplugged functions, ms (0: never). */
  presencePollMs?: number;
  log?: Log;
}

/** Drivers next to which mapping BARs from userspace is sane (none of them drives the device). */
const HANDS_OFF_DRIVERS = new Set(["", "vfio-pci", "pci-stub", "uio_pci_generic"]);
/** With bind, a function on none of these (unbound, or a host driver's) is bound to vfio-pci. */
const BIND_KEEPS = new Set(["vfio-pci", "pci-stub", "uio_pci_generic"]);

interface SysfsDevice {
  fn: PciFunction;
  info: DeviceInfo;
  /** What attach() changed on the function, undone by detach(). */
  undo: FunctionUndo;
}

/** The sysfs backend: serves its functions in mode "sysfs-wc" (never through VFIO). */
export class SysfsBackend implements Backend {
  readonly name = "sysfs";
  readonly mode = "sysfs-wc";
  readonly backingKinds = ["sysfs-wc", "sysfs"] as const;
  private readonly fns = new Map<string, SysfsDevice>();
  private readonly goneCallbacks: ((id: string) => void)[] = [];
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly log: Log;

  constructor(private readonly opts: SysfsBackendOptions) {
    this.log = opts.log ?? defaultLog;
    try {
      for (const raw of opts.devices) if (!this.fns.has(normalizeBdf(raw))) this.attach(raw);
    } catch (e) {
      this.close();
      throw e;
    }
    const pollMs = opts.presencePollMs ?? 2000;
    if (pollMs > 0) {
      this.timer = setInterval(() => this.checkPresence(), pollMs);
      this.timer.unref();
    }
  }

  /**
   * Serves one more function. Refuses one a kernel driver drives (unless bind: then it is bound to
   * vfio-pci, which never drives it here); makes sure it decodes its BARs (handsOffFunction); then
   * the kernel probe decides which attributes each BAR can have (probeSysfsRegions).
   */
  attach(raw: string): DeviceInfo {
    const bdf = normalizeBdf(raw);
    if (this.fns.has(bdf)) throw precondition(`${bdf} is served by the sysfs backend already`);
    const fn = new PciFunction(bdf, this.opts.sysfsRoot);
    let drv = fn.driver();
    if (this.opts.bind && !BIND_KEEPS.has(drv)) {
      // --vfio-bind: onto vfio-pci, only to keep host drivers off; brokerd never opens it here
      bindToVfioPci(fn, this.log);
      drv = fn.driver();
    }
    if (!HANDS_OFF_DRIVERS.has(drv))
      throw precondition(
        `${bdf} is driven by the kernel driver "${drv}"; mapping its BARs from userspace would race that driver. ` +
          `Unbind it first (echo ${bdf} > /sys/bus/pci/drivers/${drv}/unbind), or bind it to vfio-pci (--vfio-bind)`,
      );
    const undo = handsOffFunction(fn, drv, this.log);
    try {
      const probed = probeSysfsRegions(fn, fn.sysfsRegions());
      const info: DeviceInfo = {
        id: bdf,
        backend: this.name,
        vendorId: fn.vendorId,
        deviceId: fn.deviceId,
        description: `PCI ${bdf} [${fn.vendorId.toString(16).padStart(4, "0")}:${fn.deviceId.toString(16).padStart(4, "0")}] via sysfs`,
        regions: probed.regions,
        mode: "sysfs-wc",
        modeNotes: probed.notes,
      };
      this.fns.set(bdf, { fn, info, undo });
      this.log(
        `sysfs: ${bdf} [${info.description}] driver=${drv || "none"} mode=sysfs-wc (no VFIO fd): ` +
          info.regions
            .map((r) => `${r.name} ${formatBytes(r.size)} ${r.attributes.join("/") || "rw-only"}`)
            .join(", "),
      );
      for (const n of probed.notes) this.log(`sysfs: ${bdf}: ${n}`);
      return info;
    } catch (e) {
      undoHandsOff(fn, undo);
      throw e;
    }
  }

  /** Stops serving `id`: closes what brokerd holds for it and undoes what attach() changed. */
  detach(id: string): void {
    const d = this.fns.get(id);
    if (!d) throw notFound(`the sysfs backend has no device ${id}`, "unknown_device");
    this.fns.delete(id);
    if (d.fn.present) undoHandsOff(d.fn, d.undo);
    d.fn.close();
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

  device(id: string): DeviceInfo | undefined {
    return this.fns.get(id)?.info;
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
    for (const id of [...this.fns.keys()]) this.detach(id);
  }
}
