// The sysfs backend: PCI functions named by BDF in the configuration, reached through
// /sys/bus/pci/devices/<bdf>/: regions from `resource` (and `config`), mappings backed by per-BAR
// fds (`resourceN` for UC, `resourceN_wc` for WC on prefetchable BARs). A resourceN fd can map only
// its own BAR, so no device fd (config space, reset, IRQs, other BARs) ever leaves brokerd.
// Never hands out WC where the kernel has no `_wc` file: it falls back to UC only when the request
// allows it, and says so. Also owns PciFunction (the sysfs view of one function, which the vfio
// backend reuses for its sysfs-family backings) and verifyPciAttribute (the PAT check).
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  readlinkSync,
  readSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { basename, join } from "node:path";
import { mmap, PAGE_SIZE } from "@vfio-broker/native";
import { BrokerError, invalid, notFound, precondition } from "../errors.js";
import type {
  Attribute,
  AttributeCheck,
  Backend,
  Backing,
  BackingRequest,
  DeviceInfo,
  RegionInfo,
} from "./backend.js";
import { fdBacking } from "./backing.js";
import { attributeOfPatType, PAT_MEMTYPE_LIST, parsePatMemtypeList, patTypesIn } from "./pat.js";
import { CONFIG_REGION_INDEX, configRegionInfo, formatBytes, hex, regionName } from "./regions.js";

export const SYSFS_PCI_DEVICES = "/sys/bus/pci/devices";

// include/linux/ioport.h
export const IORESOURCE_IO = 0x100;
export const IORESOURCE_MEM = 0x200;
export const IORESOURCE_PREFETCH = 0x2000;
export const IORESOURCE_READONLY = 0x4000;
export const IORESOURCE_MEM_64 = 0x100000;
export const IORESOURCE_UNSET = 0x20000000;
export const IORESOURCE_DISABLED = 0x10000000;

/** One line of a sysfs `resource` file: "0x<start> 0x<end> 0x<flags>" (end inclusive). */
export interface PciResource {
  index: number;
  start: bigint;
  end: bigint;
  flags: number;
  /** end - start + 1, or 0 for an unused resource (all zeros). */
  size: bigint;
  io: boolean;
  mem: boolean;
  prefetchable: boolean;
  mem64: boolean;
}

/** Parses a sysfs `resource` file. Line i is resource i: 0-5 BARs, 6 ROM, then bridge/IOV windows. */
export function parseResourceFile(text: string): PciResource[] {
  const out: PciResource[] = [];
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  lines.forEach((line, index) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 3 || !parts.every((p) => /^0x[0-9a-f]+$/i.test(p)))
      throw new Error(`resource line ${index} "${line.trim()}" is not "0x<start> 0x<end> 0x<flags>"`);
    const [start, end, flagsBig] = parts.map((p) => BigInt(p)) as [bigint, bigint, bigint];
    const flags = Number(flagsBig & 0xffffffffn);
    const used = !(start === 0n && end === 0n) && end >= start;
    out.push({
      index,
      start,
      end,
      flags,
      size: used ? end - start + 1n : 0n,
      io: (flags & IORESOURCE_IO) !== 0,
      mem: (flags & IORESOURCE_MEM) !== 0,
      prefetchable: (flags & IORESOURCE_PREFETCH) !== 0,
      mem64: (flags & IORESOURCE_MEM_64) !== 0,
    });
  });
  return out;
}

const BDF = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;

/** "00:01.0" -> "0000:00:01.0"; lowercases; throws INVALID_ARGUMENT for anything else. */
export function normalizeBdf(text: string): string {
  let t = text.trim().toLowerCase();
  if (/^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(t)) t = `0000:${t}`;
  if (!BDF.test(t))
    throw invalid(
      `"${text}" is not a PCI address; write domain:bus:device.function like 0000:3b:00.1 (lspci -D)`,
    );
  return t;
}

export type Log = (message: string) => void;
export const defaultLog: Log = (m) => console.error(`vfio-brokerd: ${m}`);

/** The sysfs view of one PCI function. Opens files on demand; holds only the `config` fd. */
export class PciFunction {
  readonly dir: string;
  readonly resources: PciResource[];
  readonly vendorId: number;
  readonly deviceId: number;
  readonly classCode: number;
  readonly configSize: bigint;
  private configFd: number | undefined;

  constructor(
    readonly bdf: string,
    root = SYSFS_PCI_DEVICES,
  ) {
    this.dir = join(root, bdf);
    if (!existsSync(this.dir))
      throw notFound(
        `PCI function ${bdf} does not exist (${this.dir} is missing); check lspci -D`,
        "unknown_device",
      );
    this.resources = parseResourceFile(readFileSync(join(this.dir, "resource"), "utf8"));
    this.vendorId = Number(readFileSync(join(this.dir, "vendor"), "utf8").trim());
    this.deviceId = Number(readFileSync(join(this.dir, "device"), "utf8").trim());
    this.classCode = existsSync(join(this.dir, "class"))
      ? Number(readFileSync(join(this.dir, "class"), "utf8").trim())
      : 0;
    this.configSize = existsSync(join(this.dir, "config"))
      ? BigInt(fstatSizeOf(join(this.dir, "config")))
      : 0n;
  }

  get present(): boolean {
    return existsSync(this.dir);
  }

  /** The bound driver's name, or "" when none is bound. */
  driver(): string {
    try {
      return basename(readlinkSync(join(this.dir, "driver")));
    } catch {
      return "";
    }
  }

  /** The IOMMU group number, or undefined when the function has none (no IOMMU). */
  iommuGroup(): number | undefined {
    try {
      return Number(basename(readlinkSync(join(this.dir, "iommu_group"))));
    } catch {
      return undefined;
    }
  }

  /**
   * Makes sure the function decodes its BARs: an unbound function may have memory decoding off (its
   * BARs then read as nothing). Writing 1 to sysfs `enable` runs pci_enable_device(), as a driver's
   * probe would. Returns true when this call enabled it (the caller disables it again on close).
   */
  ensureEnabled(): boolean {
    const path = join(this.dir, "enable");
    if (!existsSync(path) || readFileSync(path, "utf8").trim() !== "0") return false;
    writeFileSync(path, "1");
    return true;
  }

  /** Undoes ensureEnabled(). */
  disable(): void {
    const path = join(this.dir, "enable");
    if (existsSync(path)) writeFileSync(path, "0");
  }

  resourcePath(bar: number, wc: boolean): string {
    return join(this.dir, `resource${bar}${wc ? "_wc" : ""}`);
  }

  hasResourceFile(bar: number, wc: boolean): boolean {
    return existsSync(this.resourcePath(bar, wc));
  }

  bar(index: number): PciResource | undefined {
    return index <= 5 ? this.resources[index] : undefined;
  }

  /** The BAR regions brokerd can offer through sysfs (memory BARs with a resourceN file; IO BARs for read/write). */
  sysfsRegions(): RegionInfo[] {
    const out: RegionInfo[] = [];
    for (let i = 0; i <= 5; i++) {
      const r = this.resources[i];
      if (!r || r.size === 0n || !this.hasResourceFile(i, false)) continue;
      const wc = r.mem && this.hasResourceFile(i, true);
      out.push({
        index: i,
        name: regionName(i),
        size: r.size,
        readable: true,
        writable: true,
        mappable: r.mem,
        prefetchable: r.prefetchable,
        attributes: r.mem ? (wc ? ["UC", "WC"] : ["UC"]) : [],
        sparseAreas: [],
      });
    }
    if (this.configSize > 0n) out.push(configRegionInfo(this.configSize));
    return out;
  }

  /**
   * Opens the fd a sysfs-family Backing hands over: resourceN_wc for WC, resourceN for UC, with the
   * access mode of the grant (an O_RDONLY fd cannot be mmapped writable). Probes the kernel with a
   * one-page mmap first, so a BAR that vfio-pci has claimed (EINVAL) is refused here with a reason
   * instead of failing in the client.
   */
  openBarFd(bar: number, wc: boolean, prot: "r" | "rw"): number {
    const path = this.resourcePath(bar, wc);
    const fd = openSync(path, prot === "rw" ? constants.O_RDWR : constants.O_RDONLY);
    try {
      mmap(fd, 0, PAGE_SIZE, prot).unmap();
    } catch (e) {
      closeSync(fd);
      const code = (e as { code?: string }).code;
      if (code === "EINVAL")
        throw precondition(
          `${this.bdf} ${regionName(bar)}: the kernel refuses mmaps of ${basename(path)} (EINVAL): a driver has claimed the BAR, ` +
            `most likely vfio-pci because a VFIO device fd mapped or accessed it and is still open (vfio-pci keeps the claim ` +
            `until every device fd is closed). Map it through VFIO instead, or close the VFIO users first`,
          "bar_claimed",
        );
      throw new BrokerError(
        "INTERNAL",
        `${this.bdf}: probing mmap of ${path} failed: ${(e as Error).message}`,
        "sysfs_io",
      );
    }
    return fd;
  }

  /** Small reads/writes of a BAR or config space from brokerd itself. */
  access(regionIndex: number, offset: bigint, buf: Buffer, write: boolean): number {
    if (regionIndex === CONFIG_REGION_INDEX) {
      this.configFd ??= openSync(join(this.dir, "config"), constants.O_RDWR);
      return write
        ? writeSync(this.configFd, buf, 0, buf.length, Number(offset))
        : readSync(this.configFd, buf, 0, buf.length, Number(offset));
    }
    const r = this.bar(regionIndex);
    if (!r || r.size === 0n) throw notFound(`${this.bdf} has no ${regionName(regionIndex)}`);
    if (r.io) {
      // IO BARs: the kernel implements pread/pwrite (1, 2 or 4 bytes) on resourceN.
      const fd = openSync(
        this.resourcePath(regionIndex, false),
        write ? constants.O_WRONLY : constants.O_RDONLY,
      );
      try {
        return write
          ? writeSync(fd, buf, 0, buf.length, Number(offset))
          : readSync(fd, buf, 0, buf.length, Number(offset));
      } finally {
        closeSync(fd);
      }
    }
    // Memory BARs have no read/write in sysfs: map the pages covering the access for the duration.
    const page = BigInt(PAGE_SIZE);
    const start = (offset / page) * page;
    const span = Number(((offset + BigInt(buf.length) + page - 1n) / page) * page - start);
    const fd = openSync(this.resourcePath(regionIndex, false), write ? constants.O_RDWR : constants.O_RDONLY);
    try {
      const m = mmap(fd, start, span, write ? "rw" : "r");
      try {
        const view = new Uint8Array(m.buffer, Number(offset - start), buf.length);
        if (write) view.set(buf);
        else buf.set(view);
      } finally {
        m.unmap();
      }
    } finally {
      closeSync(fd);
    }
    return buf.length;
  }

  close(): void {
    if (this.configFd !== undefined) closeSync(this.configFd);
    this.configFd = undefined;
  }
}

function fstatSizeOf(path: string): number {
  const fd = openSync(path, constants.O_RDONLY);
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads the x86 PAT memtype list (debugfs) and reports the memory types booked for
 * [BAR start + offset, + length) of a PCI function: the effective attribute of live mappings, as
 * the kernel sees it. Needs root and debugfs mounted at /sys/kernel/debug.
 */
export function verifyPciAttribute(
  fn: PciFunction,
  regionIndex: number,
  offset: bigint,
  length: bigint,
  patList = PAT_MEMTYPE_LIST,
): AttributeCheck {
  const r = fn.bar(regionIndex);
  if (!r || r.size === 0n || !r.mem)
    throw invalid(`${fn.bdf} ${regionName(regionIndex)} is not a memory BAR`);
  if (offset < 0n || length <= 0n || offset + length > r.size)
    throw invalid(
      `${hex(offset)}+${hex(length)} is outside ${regionName(regionIndex)} (${formatBytes(r.size)})`,
    );
  const physStart = r.start + offset;
  let text: string;
  try {
    text = readFileSync(patList, "utf8");
  } catch (e) {
    return {
      physStart,
      length,
      patTypes: [],
      attributes: [],
      unavailable: `${patList} is unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): mount debugfs (mount -t debugfs none /sys/kernel/debug) on an x86 host, as root`,
    };
  }
  const patTypes = patTypesIn(parsePatMemtypeList(text), physStart, length);
  const attributes = [
    ...new Set(patTypes.map(attributeOfPatType).filter((a): a is Attribute => a !== undefined)),
  ];
  return { physStart, length, patTypes, attributes, unavailable: "" };
}

/**
 * Picks the sysfs file for a request: WC needs resourceN_wc; without it, UC when the request allows
 * fallback, else INVALID_ARGUMENT saying what to ask instead.
 */
export function chooseSysfsFile(
  fn: PciFunction,
  req: Pick<BackingRequest, "deviceId" | "region" | "attribute" | "allowFallback">,
): { wc: boolean; effective: Attribute; fallbackReason: string } {
  const name = req.region.name;
  if (req.attribute === "WC") {
    if (fn.hasResourceFile(req.region.index, true)) return { wc: true, effective: "WC", fallbackReason: "" };
    const why = `${fn.bdf} has no resource${req.region.index}_wc (${name} is not a prefetchable memory BAR)`;
    if (!req.allowFallback)
      throw invalid(
        `${why}, so WC is not possible; request UC, or set allow_fallback to accept UC`,
        "attribute_unsupported",
      );
    return {
      wc: false,
      effective: "UC",
      fallbackReason: `${why}; mapped UC through resource${req.region.index}`,
    };
  }
  if (req.attribute === "WB")
    throw invalid(
      `${req.deviceId} ${name}: WB is only for simulated memory; request UC or WC`,
      "attribute_unsupported",
    );
  return { wc: false, effective: "UC", fallbackReason: "" };
}

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
    const c = chooseSysfsFile(fn, req);
    const fd = fn.openBarFd(req.region.index, c.wc, req.prot);
    return fdBacking(c.wc ? "sysfs-wc" : "sysfs", fd, req.offset, req.length, c.effective, c.fallbackReason);
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
