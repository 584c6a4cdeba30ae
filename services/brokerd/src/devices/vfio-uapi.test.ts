// Tests for vfio-uapi.ts: ioctl numbers match linux/vfio.h and the structs pack and unpack with the
// kernel's layout, including the region-info capability chain (sparse mmap areas).
import assert from "node:assert/strict";
import { test } from "node:test";
import * as u from "./vfio-uapi.js";

test("ioctl numbers are _IO(';', 100 + n) as in linux/vfio.h", () => {
  assert.equal(u.VFIO_GET_API_VERSION, 0x3b64);
  assert.equal(u.VFIO_CHECK_EXTENSION, 0x3b65);
  assert.equal(u.VFIO_SET_IOMMU, 0x3b66);
  assert.equal(u.VFIO_GROUP_GET_STATUS, 0x3b67);
  assert.equal(u.VFIO_GROUP_SET_CONTAINER, 0x3b68);
  assert.equal(u.VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
  assert.equal(u.VFIO_DEVICE_GET_INFO, 0x3b6b);
  assert.equal(u.VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
  assert.equal(u.VFIO_DEVICE_FEATURE, 0x3b75);
  assert.equal(u.VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
  assert.equal(u.VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
  assert.equal(u.IOMMU_IOAS_ALLOC, 0x3b81);
  assert.equal(u.vfioPciRegionOffset(2), 0x20000000000n);
});

test("group status, device name and device info", () => {
  const st = u.packGroupStatus();
  assert.deepEqual([...st], [8, 0, 0, 0, 0, 0, 0, 0]);
  st.writeUInt32LE(u.VFIO_GROUP_FLAGS_VIABLE | u.VFIO_GROUP_FLAGS_CONTAINER_SET, 4);
  assert.deepEqual(u.unpackGroupStatus(st), { flags: 3, viable: true });
  assert.equal(u.packDeviceName("0000:00:01.0").toString("latin1"), "0000:00:01.0\0");
  assert.deepEqual([...u.packInt32(7)], [7, 0, 0, 0]);
  const di = u.packDeviceInfo();
  assert.equal(di.length, 24);
  assert.equal(di.readUInt32LE(0), 24);
  di.writeUInt32LE(u.VFIO_DEVICE_FLAGS_PCI | u.VFIO_DEVICE_FLAGS_RESET, 4);
  di.writeUInt32LE(9, 8);
  di.writeUInt32LE(5, 12);
  assert.deepEqual(u.unpackDeviceInfo(di), { flags: 3, numRegions: 9, numIrqs: 5, pci: true, reset: true });
});

test("region info without capabilities (as the guest's ivshmem BAR2 answers)", () => {
  const b = u.packRegionInfo(2);
  assert.equal(b.length, 32);
  assert.equal(b.readUInt32LE(0), 32);
  assert.equal(b.readUInt32LE(8), 2);
  b.writeUInt32LE(0x7, 4);
  b.writeBigUInt64LE(0x100000n, 16);
  b.writeBigUInt64LE(2n << 40n, 24);
  const r = u.unpackRegionInfo(b);
  assert.equal(r.index, 2);
  assert.equal(r.size, 0x100000n);
  assert.equal(r.offset, 0x20000000000n);
  assert.deepEqual([r.readable, r.writable, r.mappable], [true, true, true]);
  assert.deepEqual(r.sparseAreas, []);
});

/** A region info with a chain: type cap at 32, sparse-mmap cap (2 areas) at 48. */
function withCaps(): Buffer {
  const b = u.packRegionInfo(0, 32 + 16 + 16 + 32);
  b.writeUInt32LE(
    u.VFIO_REGION_INFO_FLAG_READ | u.VFIO_REGION_INFO_FLAG_MMAP | u.VFIO_REGION_INFO_FLAG_CAPS,
    4,
  );
  b.writeUInt32LE(32, 12);
  b.writeBigUInt64LE(0x4000n, 16);
  b.writeUInt16LE(u.VFIO_REGION_INFO_CAP_TYPE, 32);
  b.writeUInt16LE(1, 34);
  b.writeUInt32LE(48, 36);
  b.writeUInt32LE(0x80000000, 40);
  b.writeUInt32LE(3, 44);
  b.writeUInt16LE(u.VFIO_REGION_INFO_CAP_SPARSE_MMAP, 48);
  b.writeUInt16LE(1, 50);
  b.writeUInt32LE(0, 52);
  b.writeUInt32LE(2, 56);
  b.writeBigUInt64LE(0n, 64);
  b.writeBigUInt64LE(0x1000n, 72);
  b.writeBigUInt64LE(0x3000n, 80);
  b.writeBigUInt64LE(0x1000n, 88);
  return b;
}

test("region info capability chain: sparse mmap areas and the type cap", () => {
  const r = u.unpackRegionInfo(withCaps());
  assert.deepEqual(r.caps, [u.VFIO_REGION_INFO_CAP_TYPE, u.VFIO_REGION_INFO_CAP_SPARSE_MMAP]);
  assert.deepEqual(r.type, { type: 0x80000000, subtype: 3 });
  assert.deepEqual(r.sparseAreas, [
    { offset: 0n, size: 0x1000n },
    { offset: 0x3000n, size: 0x1000n },
  ]);
  assert.equal(r.writable, false);
});

test("a capability chain that does not fit, loops, or is truncated is not walked past the buffer", () => {
  const short = withCaps().subarray(0, 32);
  const r = u.unpackRegionInfo(Buffer.from(short));
  assert.equal(r.argsz, 96, "argsz tells the caller to call again with 96 bytes");
  assert.deepEqual(r.caps, []);
  const loop = withCaps();
  loop.writeUInt32LE(32, 52); // sparse cap points back at the type cap
  assert.deepEqual(u.unpackRegionInfo(loop).caps, [2, 1]);
  const trunc = withCaps();
  trunc.writeUInt32LE(1000, 56); // claims 1000 areas
  assert.equal(u.unpackRegionInfo(trunc).sparseAreas.length, 2);
});

test("device feature probe and DMABUF export layout", () => {
  const p = u.packFeatureProbe(u.VFIO_DEVICE_FEATURE_DMA_BUF);
  assert.equal(p.readUInt32LE(0), 8);
  assert.equal(p.readUInt32LE(4), (1 << 18) | (1 << 16) | 11);
  const e = u.packDmaBufExport(2, [{ offset: 0x1000n, length: 0x2000n }], 0o2000002);
  assert.equal(e.length, 40);
  assert.equal(e.readUInt32LE(0), 40);
  assert.equal(e.readUInt32LE(4), (1 << 16) | 11);
  assert.deepEqual(
    [e.readUInt32LE(8), e.readUInt32LE(12), e.readUInt32LE(16), e.readUInt32LE(20)],
    [2, 0o2000002, 0, 1],
  );
  assert.deepEqual([e.readBigUInt64LE(24), e.readBigUInt64LE(32)], [0x1000n, 0x2000n]);
});

test("iommufd structs", () => {
  const b = u.packBindIommufd(5);
  assert.deepEqual([b.readUInt32LE(0), b.readUInt32LE(4), b.readInt32LE(8)], [16, 0, 5]);
  const a = u.packIoasAlloc();
  a.writeUInt32LE(9, 8);
  assert.equal(u.unpackIoasAlloc(a), 9);
  assert.deepEqual([...u.packAttachPt(9)], [12, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0]);
});
