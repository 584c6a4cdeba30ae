// The VFIO and iommufd userspace API as brokerd uses it (linux/vfio.h, linux/iommufd.h): ioctl
// numbers, constants, and the packing/unpacking of the structs those ioctls move, as plain
// Buffers, and how a failed call is named. Pure: no fds, no ioctl calls (vfio-open.ts, vfio-probe.ts
// and vfio-backings.ts do those through @vfio-broker/native).
// Every struct is little-endian x86_64/aarch64 layout with natural alignment, as the kernel's.

// ---- ioctl numbers -------------------------------------------------------------------------------
// VFIO's ioctls are _IO(VFIO_TYPE, VFIO_BASE + n): no size in the number; the size travels in argsz.
export const VFIO_TYPE = 0x3b; // ';'
export const VFIO_BASE = 100;
const io = (nr: number) => (VFIO_TYPE << 8) | nr;

export const VFIO_GET_API_VERSION = io(VFIO_BASE + 0);
export const VFIO_CHECK_EXTENSION = io(VFIO_BASE + 1);
export const VFIO_SET_IOMMU = io(VFIO_BASE + 2);
export const VFIO_GROUP_GET_STATUS = io(VFIO_BASE + 3);
export const VFIO_GROUP_SET_CONTAINER = io(VFIO_BASE + 4);
export const VFIO_GROUP_UNSET_CONTAINER = io(VFIO_BASE + 5);
export const VFIO_GROUP_GET_DEVICE_FD = io(VFIO_BASE + 6);
export const VFIO_DEVICE_GET_INFO = io(VFIO_BASE + 7);
export const VFIO_DEVICE_GET_REGION_INFO = io(VFIO_BASE + 8);
export const VFIO_DEVICE_RESET = io(VFIO_BASE + 11);
export const VFIO_DEVICE_FEATURE = io(VFIO_BASE + 17);
export const VFIO_DEVICE_BIND_IOMMUFD = io(VFIO_BASE + 18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = io(VFIO_BASE + 19);
/** iommufd ioctls: _IO(IOMMUFD_TYPE=';', IOMMUFD_CMD_BASE=0x80 + n). */
export const IOMMU_IOAS_ALLOC = io(0x80 + 1);

export const VFIO_API_VERSION = 0;
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_TYPE1v2_IOMMU = 3;
export const VFIO_NOIOMMU_IOMMU = 8;

export const VFIO_GROUP_FLAGS_VIABLE = 1 << 0;
export const VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1;

export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;

export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;
export const VFIO_REGION_INFO_FLAG_CAPS = 1 << 3;

export const VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;
export const VFIO_REGION_INFO_CAP_TYPE = 2;

export const VFIO_DEVICE_FEATURE_MASK = 0xffff;
export const VFIO_DEVICE_FEATURE_GET = 1 << 16;
export const VFIO_DEVICE_FEATURE_SET = 1 << 17;
export const VFIO_DEVICE_FEATURE_PROBE = 1 << 18;
/** Export a range of a region as a DMABUF fd (Linux 6.19+). */
export const VFIO_DEVICE_FEATURE_DMA_BUF = 11;

/** vfio-pci's fixed region offsets: region i lives at i << 40 in the device fd. */
export const VFIO_PCI_OFFSET_SHIFT = 40n;
export const vfioPciRegionOffset = (index: number): bigint => BigInt(index) << VFIO_PCI_OFFSET_SHIFT;

// ---- structs -------------------------------------------------------------------------------------

/** struct vfio_group_status { u32 argsz; u32 flags; } */
export function packGroupStatus(): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(8, 0);
  return b;
}
export function unpackGroupStatus(b: Buffer): { flags: number; viable: boolean } {
  const flags = b.readUInt32LE(4);
  return { flags, viable: (flags & VFIO_GROUP_FLAGS_VIABLE) !== 0 };
}

/** An int passed by pointer (VFIO_GROUP_SET_CONTAINER takes `int *`). */
export function packInt32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
}

/** VFIO_GROUP_GET_DEVICE_FD takes the device name (the BDF) as a NUL-terminated string. */
export function packDeviceName(bdf: string): Buffer {
  return Buffer.from(`${bdf}\0`, "ascii");
}

export const DEVICE_INFO_SIZE = 24;
/** struct vfio_device_info { u32 argsz, flags, num_regions, num_irqs, cap_offset, pad; } */
export function packDeviceInfo(): Buffer {
  const b = Buffer.alloc(DEVICE_INFO_SIZE);
  b.writeUInt32LE(DEVICE_INFO_SIZE, 0);
  return b;
}
export interface VfioDeviceInfo {
  flags: number;
  numRegions: number;
  numIrqs: number;
  pci: boolean;
  reset: boolean;
}
export function unpackDeviceInfo(b: Buffer): VfioDeviceInfo {
  const flags = b.readUInt32LE(4);
  return {
    flags,
    numRegions: b.readUInt32LE(8),
    numIrqs: b.readUInt32LE(12),
    pci: (flags & VFIO_DEVICE_FLAGS_PCI) !== 0,
    reset: (flags & VFIO_DEVICE_FLAGS_RESET) !== 0,
  };
}

export const REGION_INFO_SIZE = 32;
/**
 * struct vfio_region_info { u32 argsz, flags, index, cap_offset; u64 size, offset; } followed by
 * the capability chain when argsz was large enough. Call with REGION_INFO_SIZE first; if the kernel
 * answers with a larger argsz (capabilities did not fit), call again with that size.
 */
export function packRegionInfo(index: number, argsz = REGION_INFO_SIZE): Buffer {
  const b = Buffer.alloc(Math.max(argsz, REGION_INFO_SIZE));
  b.writeUInt32LE(b.length, 0);
  b.writeUInt32LE(index, 8);
  return b;
}

export interface SparseMmapArea {
  offset: bigint;
  size: bigint;
}

export interface VfioRegionInfo {
  index: number;
  flags: number;
  size: bigint;
  /** Offset of the region in the device fd (for read/write/mmap). */
  offset: bigint;
  readable: boolean;
  writable: boolean;
  mappable: boolean;
  /** argsz the kernel needs for the whole capability chain (> buffer size: call again). */
  argsz: number;
  /** Capability ids seen in the chain. */
  caps: number[];
  /** From VFIO_REGION_INFO_CAP_SPARSE_MMAP: only these areas may be mmapped ([] = no such cap). */
  sparseAreas: SparseMmapArea[];
  /** From VFIO_REGION_INFO_CAP_TYPE, when present. */
  type?: { type: number; subtype: number };
}

export function unpackRegionInfo(b: Buffer): VfioRegionInfo {
  const argsz = b.readUInt32LE(0);
  const flags = b.readUInt32LE(4);
  const info: VfioRegionInfo = {
    index: b.readUInt32LE(8),
    flags,
    size: b.readBigUInt64LE(16),
    offset: b.readBigUInt64LE(24),
    readable: (flags & VFIO_REGION_INFO_FLAG_READ) !== 0,
    writable: (flags & VFIO_REGION_INFO_FLAG_WRITE) !== 0,
    mappable: (flags & VFIO_REGION_INFO_FLAG_MMAP) !== 0,
    argsz,
    caps: [],
    sparseAreas: [],
  };
  const capOffset = b.readUInt32LE(12);
  if (!(flags & VFIO_REGION_INFO_FLAG_CAPS) || capOffset === 0 || argsz > b.length) return info;
  // Walk the chain: struct vfio_info_cap_header { u16 id; u16 version; u32 next; } (next is an
  // offset from the start of the struct; 0 ends the chain). Guard against loops and truncation.
  const seen = new Set<number>();
  for (let at = capOffset; at !== 0 && at + 8 <= b.length && !seen.has(at); ) {
    seen.add(at);
    const id = b.readUInt16LE(at);
    const next = b.readUInt32LE(at + 4);
    info.caps.push(id);
    if (id === VFIO_REGION_INFO_CAP_SPARSE_MMAP && at + 16 <= b.length) {
      // struct vfio_region_info_cap_sparse_mmap { header; u32 nr_areas; u32 reserved; areas[] }
      const n = b.readUInt32LE(at + 8);
      for (let i = 0; i < n && at + 16 + 16 * (i + 1) <= b.length; i++) {
        const a = at + 16 + 16 * i;
        info.sparseAreas.push({ offset: b.readBigUInt64LE(a), size: b.readBigUInt64LE(a + 8) });
      }
    } else if (id === VFIO_REGION_INFO_CAP_TYPE && at + 16 <= b.length) {
      info.type = { type: b.readUInt32LE(at + 8), subtype: b.readUInt32LE(at + 12) };
    }
    at = next;
  }
  return info;
}

/**
 * struct vfio_device_feature { u32 argsz; u32 flags; u8 data[]; } with VFIO_DEVICE_FEATURE_PROBE:
 * succeeds (0) when the device supports `feature` with the given GET/SET direction.
 */
export function packFeatureProbe(feature: number, direction: number = VFIO_DEVICE_FEATURE_GET): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(8, 0);
  b.writeUInt32LE(VFIO_DEVICE_FEATURE_PROBE | direction | (feature & VFIO_DEVICE_FEATURE_MASK), 4);
  return b;
}

/**
 * VFIO_DEVICE_FEATURE_GET | DMA_BUF: struct vfio_device_feature header, then
 * struct vfio_device_feature_dma_buf { u32 region_index, open_flags, flags, nr_ranges;
 * struct vfio_region_dma_range { u64 offset, length; } dma_ranges[]; }. The ioctl returns the fd.
 */
export function packDmaBufExport(
  regionIndex: number,
  ranges: { offset: bigint; length: bigint }[],
  openFlags: number,
  flags = 0,
): Buffer {
  const size = 8 + 16 + 16 * ranges.length;
  const b = Buffer.alloc(size);
  b.writeUInt32LE(size, 0);
  b.writeUInt32LE(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF, 4);
  b.writeUInt32LE(regionIndex, 8);
  b.writeUInt32LE(openFlags >>> 0, 12);
  b.writeUInt32LE(flags >>> 0, 16);
  b.writeUInt32LE(ranges.length, 20);
  ranges.forEach((r, i) => {
    b.writeBigUInt64LE(r.offset, 24 + 16 * i);
    b.writeBigUInt64LE(r.length, 32 + 16 * i);
  });
  return b;
}

/** struct vfio_device_bind_iommufd { u32 argsz, flags; s32 iommufd; u32 out_devid; } */
export function packBindIommufd(iommufd: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(16, 0);
  b.writeInt32LE(iommufd, 8);
  return b;
}

/** struct iommu_ioas_alloc { u32 size, flags, out_ioas_id; } */
export function packIoasAlloc(): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(12, 0);
  return b;
}
export const unpackIoasAlloc = (b: Buffer): number => b.readUInt32LE(8);

/** struct vfio_device_attach_iommufd_pt { u32 argsz, flags, pt_id; } */
export function packAttachPt(ptId: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(12, 0);
  b.writeUInt32LE(ptId, 8);
  return b;
}

// ---- fd flags and errors -------------------------------------------------------------------------

/** open(2)'s O_CLOEXEC (asm-generic/fcntl.h), for the flags of an exported dma-buf. */
export const O_CLOEXEC = 0o2000000;

/** The errno name of a failed ioctl or open (EINVAL, ENOTTY, ...), else the error's message. */
export const errno = (e: unknown): string => (e as { code?: string }).code ?? (e as Error).message;
