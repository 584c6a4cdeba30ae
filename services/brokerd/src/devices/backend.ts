// The Backend interface: a provider of devices (sim, sysfs, vfio). brokerd's grant logic talks to
// every backend through this narrow interface only, so the simulated devices go through the same
// code path as real ones. A backend owns the privileged fds of its devices; it never decides policy.

export type Attribute = "UC" | "WC" | "WB";
export type Prot = "r" | "rw";
export type BackingKind = "dmabuf" | "sysfs-wc" | "sysfs" | "vfio-device-fd" | "memfd";
export type DeviceHealth = "healthy" | "draining" | "gone";
/**
 * How a device is served (devices/modes.ts): "sysfs-wc" never opens it through VFIO (resourceN /
 * resourceN_wc fds, WC on every kernel, no device fd, DMA or interrupts); "vfio" holds a VFIO device fd.
 */
export type DeviceMode = "sysfs-wc" | "vfio";
export const DEVICE_MODES: readonly DeviceMode[] = ["sysfs-wc", "vfio"];

export interface SparseArea {
  offset: bigint;
  size: bigint;
}

export interface RegionInfo {
  /** VFIO region index (0-5 BARs, 6 ROM, 7 CONFIG, 8 VGA). */
  index: number;
  name: string;
  size: bigint;
  readable: boolean;
  writable: boolean;
  mappable: boolean;
  prefetchable: boolean;
  /** Attributes this backend can give an mmap of this region (effective, not merely requested). */
  attributes: Attribute[];
  sparseAreas: SparseArea[];
}

export interface DeviceInfo {
  id: string;
  backend: string;
  vendorId: number;
  deviceId: number;
  description: string;
  regions: RegionInfo[];
  mode: DeviceMode;
  /** What the kernel probe found this mode cannot give here, and why (for the API and the log). */
  modeNotes: string[];
}

export interface BackingRequest {
  deviceId: string;
  region: RegionInfo;
  /** Offset inside the region (page aligned). */
  offset: bigint;
  length: bigint;
  attribute: Attribute;
  prot: Prot;
  /** Map with a weaker attribute instead of failing when the requested one cannot be given. */
  allowFallback: boolean;
  /** Policy allows handing over the whole VFIO device fd. */
  allowDeviceFd: boolean;
}

/**
 * What the client will mmap. The fd belongs to the Backing until handedOver() or release(): brokerd
 * holds it only while the mapping waits for delivery, so a live mapping costs brokerd no fd.
 */
export interface Backing {
  kind: BackingKind;
  fd: number;
  /** Offset to pass to mmap(2) on fd. */
  mmapOffset: bigint;
  length: bigint;
  effectiveAttribute: Attribute;
  /** Why the effective attribute differs from the requested one ("" when it does not). */
  fallbackReason: string;
  /** The client has its own copy of fd now: close brokerd's (bookkeeping stays until release()). Idempotent. */
  handedOver(): void;
  /** Closes what brokerd holds for this mapping and ends its bookkeeping. Idempotent. */
  release(): void;
}

/** The memory types the kernel booked for a physical range (x86 PAT), for verification. */
export interface AttributeCheck {
  /** Physical range checked: BAR start (from `resource`) + offset, length bytes. */
  physStart: bigint;
  length: bigint;
  /** Memory types the kernel has booked over that range (x86 PAT), e.g. "write-combining". */
  patTypes: string[];
  /** The broker attributes those types realize. */
  attributes: Attribute[];
  /** "" when the list was read; else why not (no debugfs, not x86, ...). */
  unavailable: string;
}

export interface Backend {
  readonly name: string;
  /** Backing kinds this backend can hand out (advertised in Hello). */
  readonly backingKinds: readonly BackingKind[];
  /**
   * The backing kinds that can actually be given on this kernel and these devices (advertised in
   * Hello); absent: all of backingKinds.
   */
  offeredBackingKinds?(): BackingKind[];
  devices(): DeviceInfo[];
  /** One device of devices() by id, or undefined (a lookup per grant: no array made). */
  device(id: string): DeviceInfo | undefined;
  /**
   * The mode every device this backend takes in is served in (sysfs: "sysfs-wc", vfio: "vfio");
   * absent for a backend that serves each device in either mode itself (sim: setMode).
   */
  readonly mode?: DeviceMode;
  /** Starts serving the PCI function `id` (a BDF) in this backend's mode (devices/modes.ts). */
  attach?(id: string): DeviceInfo;
  /** Stops serving `id`, closing what it holds for it; only called when nothing holds the device. */
  detach?(id: string): void;
  /** Serves `id` in `mode` from now on, within this backend (sim). */
  setMode?(id: string, mode: DeviceMode): DeviceInfo;
  /**
   * Chooses and opens the backing for one mapping. Throws BrokerError (INVALID_ARGUMENT when the
   * attribute cannot be given and no fallback is allowed; PERMISSION_DENIED when the only backing
   * would be the device fd and policy does not allow it).
   */
  openBacking(req: BackingRequest): Backing;
  /** Small accesses through brokerd (ReadRegion/WriteRegion). Offsets relative to the region. */
  read(deviceId: string, regionIndex: number, offset: bigint, length: number): Buffer;
  write(deviceId: string, regionIndex: number, offset: bigint, data: Uint8Array): number;
  /** Reads the kernel's memory-type bookkeeping for a range of a region (real devices only). */
  verifyAttribute?(deviceId: string, regionIndex: number, offset: bigint, length: bigint): AttributeCheck;
  /** Called when a device disappears (hot-unplug); the broker revokes everything on it. */
  onDeviceGone(cb: (deviceId: string) => void): void;
  close(): void;
}
