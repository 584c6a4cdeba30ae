// The sim backend: devices described in config whose BARs are memfds owned by brokerd, so every
// client and brokerd see the same bytes. It is the embedded default (npm start, CI) and goes
// through the same Backend interface as sysfs and vfio. A mapping's fd is one of two descriptions
// of its region, opened with the region through /proc/self/fd, one per access mode: a read-only
// grant gets the O_RDONLY one, so it cannot be mmapped writable. Both are apart from the
// description brokerd reads and writes through (a client setting O_APPEND on its copy must not
// move brokerd's WriteRegion), and the clients of one region and mode share theirs (its offset and
// status flags, which mmap does not use): a grant then costs no open(2) and no close(2).
//
// With a memory directory (the state directory's sim/), each region's memory is a file there
// instead of an anonymous memfd, so a restarted brokerd (kill -9 included) finds the bytes its
// clients wrote, as a real device keeps its BAR contents while the driver restarts. The directory
// is verified and held by fd, and its files are opened through it, never through a symbolic link
// (native/src/safe-dir.ts): a planted link must not make brokerd size or share another file.
//
// Limits of simulation: a memfd is ordinary memory, so "UC" and "WC" are reported as granted but
// not enforced by hardware; and a client holding a memfd can map the whole simulated BAR (as a
// sysfs resourceN fd grants the whole BAR). Only a kernel DMABUF slice can be narrower.
import {
  closeSync,
  constants,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { memfdCreate, openInSafeDir, openSafeDir, type SafeDir } from "@vfio-broker/native";
import { invalid, notFound, quoted } from "../errors.js";
import {
  type Attribute,
  type Backend,
  type Backing,
  type BackingRequest,
  DEVICE_MODES,
  type DeviceInfo,
  type DeviceMode,
  type RegionInfo,
} from "./backend.js";
import { sharedFdBacking } from "./backing.js";
import { CONFIG_REGION_INDEX, configRegionInfo, regionName } from "./regions.js";

export interface SimRegionSpec {
  index: number;
  size: number | bigint;
  prefetchable?: boolean;
}

export interface SimDeviceSpec {
  id: string;
  vendorId?: number;
  deviceId?: number;
  description?: string;
  regions: SimRegionSpec[];
  /** The mode it reports (default "sysfs-wc", which a memfd of the whole BAR models); see setMode. */
  mode?: DeviceMode;
}

/** The default: sim0 as the issue describes (UC register BAR, prefetchable WC-capable BAR), sim1 smaller. */
export const DEFAULT_SIM_DEVICES: SimDeviceSpec[] = [
  {
    id: "sim0",
    description: "simulated NIC: BAR0 64 KiB registers (UC), BAR2 16 MiB prefetchable (UC/WC)",
    regions: [
      { index: 0, size: 64 << 10 },
      { index: 2, size: 16 << 20, prefetchable: true },
    ],
  },
  {
    id: "sim1",
    description: "simulated accelerator: BAR0 16 KiB registers (UC), BAR4 4 MiB prefetchable (UC/WC)",
    regions: [
      { index: 0, size: 16 << 10 },
      { index: 4, size: 4 << 20, prefetchable: true },
    ],
  },
];

const CONFIG_SIZE = 4096n;
const SIM_VENDOR = 0x1b36; // Red Hat / QEMU: the vendor id of emulated test devices
const SIM_DEVICE = 0x0010;

interface SimRegion {
  info: RegionInfo;
  memfd: number;
  /** The clients' descriptions, read-only and read-write (opened with the region). */
  ro: number;
  rw: number;
}

interface SimDevice {
  info: DeviceInfo;
  regions: Map<number, SimRegion>;
}

function validateSpec(spec: SimDeviceSpec): void {
  if (spec.mode !== undefined && !DEVICE_MODES.includes(spec.mode))
    throw invalid(
      `sim device ${spec.id}: mode ${quoted(String(spec.mode))} is not one of ${DEVICE_MODES.join(", ")}`,
    );
  if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/.test(spec.id))
    throw invalid(
      `sim device id ${quoted(String(spec.id))} must be 1-64 letters, digits, '_', '.', ':' or '-'`,
    );
  const seen = new Set<number>();
  for (const r of spec.regions) {
    if (!Number.isInteger(r.index) || r.index < 0 || r.index > 6)
      throw invalid(`sim device ${spec.id}: region index ${r.index} is not a BAR (0-5) or ROM (6)`);
    if (seen.has(r.index)) throw invalid(`sim device ${spec.id}: region ${r.index} is given twice`);
    seen.add(r.index);
    const size = BigInt(r.size);
    if (size < 4096n || (size & (size - 1n)) !== 0n || size > 1n << 34n)
      throw invalid(
        `sim device ${spec.id}: ${regionName(r.index)} size ${size} must be a power of two from 4 KiB to 16 GiB`,
      );
  }
}

/** Standard PCI config header so ReadRegion(CONFIG) shows what a real device would. */
function configHeader(spec: SimDeviceSpec): Buffer {
  const cfg = Buffer.alloc(Number(CONFIG_SIZE));
  cfg.writeUInt16LE(spec.vendorId ?? SIM_VENDOR, 0);
  cfg.writeUInt16LE(spec.deviceId ?? SIM_DEVICE, 2);
  cfg.writeUInt8(0x00, 0x0e); // header type 0
  for (const r of spec.regions) {
    if (r.index > 5) continue;
    // memory BAR: bit 3 prefetchable, bits 2:1 = 00 (32-bit)
    cfg.writeUInt32LE(r.prefetchable ? 0x8 : 0x0, 0x10 + 4 * r.index);
  }
  return cfg;
}

/** A region over memfd, with its clients' two descriptions (the caller's memfd is closed on failure). */
function simRegion(info: RegionInfo, memfd: number): SimRegion {
  const r: SimRegion = { info, memfd, ro: -1, rw: -1 };
  try {
    r.ro = openSync(`/proc/self/fd/${memfd}`, constants.O_RDONLY);
    r.rw = openSync(`/proc/self/fd/${memfd}`, constants.O_RDWR);
  } catch (e) {
    closeRegion(r);
    throw e;
  }
  return r;
}

function closeRegion(r: SimRegion): void {
  for (const fd of [r.memfd, r.ro, r.rw]) if (fd >= 0) closeSync(fd);
  r.ro = r.rw = -1;
}

export class SimBackend implements Backend {
  readonly name = "sim";
  readonly backingKinds = ["memfd"] as const;
  private readonly devs = new Map<string, SimDevice>();
  private readonly goneCallbacks: ((id: string) => void)[] = [];
  private readonly memoryDir: SafeDir | undefined;

  /** memoryDir: keep region memory in files there (surviving brokerd restarts); else memfds. */
  constructor(specs: SimDeviceSpec[] = DEFAULT_SIM_DEVICES, memoryDir?: string) {
    this.memoryDir = memoryDir
      ? openSafeDir(memoryDir, { role: "the sim devices' memory directory", create: 0o700, mode: 0o700 })
      : undefined;
    try {
      for (const s of specs) this.addDevice(s);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** The region's memory: its file under memoryDir (kept if it has the right size), or a memfd. */
  private memory(deviceId: string, region: string, size: bigint): number {
    if (!this.memoryDir) return memfdCreate(`vfio-broker-${deviceId}-${region}`, size);
    const fd = openInSafeDir(
      this.memoryDir,
      `${deviceId}.${region}`,
      constants.O_RDWR | constants.O_CREAT,
      0o600,
    );
    if (BigInt(fstatSync(fd).size) !== size) {
      ftruncateSync(fd, 0);
      ftruncateSync(fd, Number(size));
    }
    return fd;
  }

  devices(): DeviceInfo[] {
    return [...this.devs.values()].map((d) => d.info);
  }

  device(id: string): DeviceInfo | undefined {
    return this.devs.get(id)?.info;
  }

  addDevice(spec: SimDeviceSpec): DeviceInfo {
    validateSpec(spec);
    if (this.devs.has(spec.id))
      throw invalid(`sim device ${quoted(spec.id)} already exists; remove it first`);
    const regions = new Map<number, SimRegion>();
    try {
      for (const r of [...spec.regions].sort((a, b) => a.index - b.index)) {
        const size = BigInt(r.size);
        const info: RegionInfo = {
          index: r.index,
          name: regionName(r.index),
          size,
          readable: true,
          writable: r.index !== 6,
          mappable: true,
          prefetchable: !!r.prefetchable,
          attributes: r.prefetchable ? ["UC", "WC", "WB"] : ["UC"],
          sparseAreas: [],
        };
        regions.set(r.index, simRegion(info, this.memory(spec.id, info.name, size)));
      }
      const cfg = simRegion(configRegionInfo(CONFIG_SIZE), this.memory(spec.id, "CONFIG", CONFIG_SIZE));
      regions.set(CONFIG_REGION_INDEX, cfg);
      writeSync(cfg.memfd, configHeader(spec), 0, Number(CONFIG_SIZE), 0);
    } catch (e) {
      for (const r of regions.values()) closeRegion(r);
      throw e;
    }
    const info: DeviceInfo = {
      id: spec.id,
      backend: "sim",
      vendorId: spec.vendorId ?? SIM_VENDOR,
      deviceId: spec.deviceId ?? SIM_DEVICE,
      description: spec.description ?? `simulated device ${spec.id}`,
      regions: [...regions.values()].map((r) => r.info),
      mode: spec.mode ?? "sysfs-wc",
      modeNotes: [],
    };
    this.devs.set(spec.id, { info, regions });
    return info;
  }

  /**
   * Serves the device in `mode` from now on. The memory stays the same memfd (a simulation has no
   * VFIO to open): only what brokerd reports changes, through the same switch as a real device's.
   * A new DeviceInfo, so that a device file opened before keeps the one it was opened with.
   */
  setMode(id: string, mode: DeviceMode): DeviceInfo {
    const dev = this.devs.get(id);
    if (!dev) throw notFound(`sim device ${id} does not exist`);
    dev.info = { ...dev.info, mode };
    return dev.info;
  }

  /** Hot-unplug: tells the broker (which revokes everything on the device), then frees the memory. */
  removeDevice(id: string): void {
    const dev = this.devs.get(id);
    if (!dev) throw notFound(`sim device ${id} does not exist`);
    for (const cb of this.goneCallbacks) cb(id);
    this.devs.delete(id);
    for (const r of dev.regions.values()) {
      closeRegion(r);
      if (this.memoryDir)
        try {
          unlinkSync(this.memoryDir.at(`${id}.${r.info.name}`));
        } catch {
          /* already gone */
        }
    }
  }

  private region(deviceId: string, index: number): SimRegion {
    const r = this.devs.get(deviceId)?.regions.get(index);
    if (!r) throw notFound(`device ${deviceId} has no region ${index}`);
    return r;
  }

  openBacking(req: BackingRequest): Backing {
    const r = this.region(req.deviceId, req.region.index);
    let effective: Attribute = req.attribute;
    let fallbackReason = "";
    if (!r.info.attributes.includes(req.attribute)) {
      if (!req.allowFallback || !r.info.attributes.includes("UC"))
        throw invalid(
          `${req.deviceId} ${r.info.name} cannot be mapped ${req.attribute}: it allows ${r.info.attributes.join(", ") || "no mmap"}` +
            `${r.info.prefetchable ? "" : " (not a prefetchable BAR)"}; request UC, or set allow_fallback to accept UC`,
          "attribute_unsupported",
        );
      effective = "UC";
      fallbackReason = `${r.info.name} is not prefetchable, so ${req.attribute} is not possible; mapped UC`;
    }
    return sharedFdBacking(
      "memfd",
      req.prot === "rw" ? r.rw : r.ro,
      req.offset,
      req.length,
      effective,
      fallbackReason,
    );
  }

  read(deviceId: string, regionIndex: number, offset: bigint, length: number): Buffer {
    const r = this.region(deviceId, regionIndex);
    const buf = Buffer.alloc(length);
    const n = readSync(r.memfd, buf, 0, length, offset);
    return buf.subarray(0, n);
  }

  write(deviceId: string, regionIndex: number, offset: bigint, data: Uint8Array): number {
    const r = this.region(deviceId, regionIndex);
    return writeSync(r.memfd, data, 0, data.length, Number(offset));
  }

  onDeviceGone(cb: (deviceId: string) => void): void {
    this.goneCallbacks.push(cb);
  }

  close(): void {
    for (const d of this.devs.values()) for (const r of d.regions.values()) closeRegion(r);
    this.devs.clear();
    this.memoryDir?.close();
  }
}
