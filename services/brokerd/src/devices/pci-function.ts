// PciFunction: the sysfs view of one PCI function (/sys/bus/pci/devices/<bdf>/): its resources,
// ids, bound driver and IOMMU group, enabling it, its BAR regions, the resourceN fds that back
// sysfs-family mappings (probed with a one-page mmap) and small reads/writes of BARs and config
// space from brokerd itself. Both PCI backends use it.
// Holds no fd but the `config` one (closed by close()); never binds or unbinds a driver (vfio-open.ts
// does) and never decides what a request may get (the backends do).
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
import { BrokerError, notFound, precondition } from "../errors.js";
import type { RegionInfo } from "./backend.js";
import { type PciResource, parseResourceFile } from "./pci-resources.js";
import { CONFIG_REGION_INDEX, configRegionInfo, regionName } from "./regions.js";

export const SYSFS_PCI_DEVICES = "/sys/bus/pci/devices";

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
