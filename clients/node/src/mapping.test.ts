// Mapping over a memfd with a fake owner (no brokerd): typed little-endian accessors, bounds,
// read-only protection, release and revocation.
import assert from "node:assert/strict";
import { openSync, readdirSync } from "node:fs";
import { test } from "node:test";
import { closeFd, memfdCreate, mmap } from "@vfio-broker/native";
import { MappingGoneError } from "./errors.js";
import { Mapping, type MappingGrant, type MappingOwner } from "./mapping.js";

function owner(): MappingOwner & { released: bigint[] } {
  const released: bigint[] = [];
  return {
    id: 1n,
    deviceId: "sim0",
    released,
    releaseMapping: async (m) => {
      released.push(m.cookie);
    },
  };
}

function grant(over: Partial<MappingGrant> = {}): MappingGrant {
  return {
    cookie: 0x10000n,
    regionIndex: 2,
    regionName: "BAR2",
    regionOffset: 0n,
    length: 4096,
    requestedAttribute: "wc",
    effectiveAttribute: "wc",
    fallbackReason: "",
    backing: "memfd",
    prot: "rw",
    mmapOffset: 0n,
    ...over,
  };
}

const openFds = () => readdirSync("/proc/self/fd").length;

test("accessors are little-endian and see the same memory as another mapping of the fd", async () => {
  const fd = memfdCreate("maptest", 8192);
  const peer = mmap(fd, 0, 8192, "rw");
  const before = openFds();
  // fromFd takes ownership of the fd it is given (and closes it): give it its own open file
  const m = Mapping.fromFd(owner(), grant({ mmapOffset: 4096n }), openSync(`/proc/self/fd/${fd}`, "r+"));
  assert.equal(openFds(), before, "fromFd closed the fd right after mmap");
  m.write32(0, 0x11223344);
  assert.deepEqual([...new Uint8Array(peer.buffer, 4096, 4)], [0x44, 0x33, 0x22, 0x11]);
  m.write16(4, 0xbeef);
  m.write8(6, 0x7f);
  m.write64(8, 0x0102030405060708n);
  assert.equal(m.read32(0), 0x11223344);
  assert.equal(m.read16(4), 0xbeef);
  assert.equal(m.read8(6), 0x7f);
  assert.equal(m.read64(8), 0x0102030405060708n);
  assert.equal(m.read8(8), 0x08);
  m.writeBytes(4092, Buffer.from("abcd"));
  assert.equal(m.readBytes(4092, 4).toString(), "abcd");
  const copy = m.readBytes(0, 4);
  m.write8(0, 0);
  assert.equal(copy[0], 0x44, "readBytes returns a copy");
  await m.release();
  peer.unmap();
  closeFd(fd);
});

test("bounds: clear RangeErrors, values checked", () => {
  const fd = memfdCreate("maptest", 4096);
  const m = Mapping.fromFd(owner(), grant(), fd);
  assert.throws(
    () => m.read32(4093),
    /read32: 4 byte\(s\) at offset 0xffd are outside the 4096-byte mapping; valid offsets are 0\.\.0xffc/,
  );
  assert.throws(() => m.read64(4096), RangeError);
  assert.throws(() => m.read8(-1), /offset must be a non-negative integer/);
  assert.throws(() => m.read8(1.5), RangeError);
  assert.throws(() => m.readBytes(0, 4097), RangeError);
  assert.throws(() => m.writeBytes(4095, Buffer.alloc(2)), RangeError);
  assert.throws(() => m.write8(0, 256), /value must be an integer in \[0, 0xff\]/);
  assert.throws(() => m.write16(0, -1), RangeError);
  assert.throws(() => m.write32(0, 2 ** 32), RangeError);
  assert.throws(() => m.write64(0, 1n << 64n), RangeError);
  assert.throws(() => m.write64(0, 5 as unknown as bigint), RangeError);
  // Registers are accessed at natural alignment, one load/store of the access width.
  assert.throws(() => m.read32(2), /read32: offset 0x2 is not 4-byte aligned/);
  assert.throws(() => m.write16(1, 0), /write16: offset 0x1 is not 2-byte aligned/);
  assert.throws(() => m.read64(4), /read64: offset 0x4 is not 8-byte aligned/);
  void m.release();
});

test("a read-only mapping refuses writes instead of faulting", async () => {
  const fd = memfdCreate("maptest", 4096);
  const m = Mapping.fromFd(owner(), grant({ prot: "r" }), fd);
  assert.equal(m.read32(0), 0);
  assert.throws(() => m.write32(0, 1), /read-only \(prot "r"\); map it with prot "rw" to write/);
  assert.throws(() => m.writeBytes(0, Buffer.alloc(1)), TypeError);
  await m.release();
});

test("release: unmaps, tells the owner once, idempotent; accessors throw afterwards", async () => {
  const o = owner();
  const m = Mapping.fromFd(o, grant(), memfdCreate("maptest", 4096));
  const p1 = m.release();
  const p2 = m.release();
  assert.equal(p1, p2);
  await p1;
  assert.deepEqual(o.released, [0x10000n]);
  assert.equal(m.released, true);
  assert.throws(
    () => m.read8(0),
    (e: Error) => e instanceof MappingGoneError && /was released/.test(e.message),
  );
  assert.throws(() => m.buffer, MappingGoneError);
});

test("revocation: unmapped at once, accessors name the reason, release does not call the broker", async () => {
  const o = owner();
  const m = Mapping.fromFd(o, grant(), memfdCreate("maptest", 4096));
  const buf = m.buffer;
  m.markRevoked("operator");
  assert.equal(m.revoked, true);
  assert.equal(m.revokeReason, "operator");
  assert.equal(buf.byteLength, 0, "the memory is unmapped (buffer detached)");
  assert.throws(() => m.write32(0, 1), /was revoked by the broker \(operator\)/);
  await m.release();
  assert.deepEqual(o.released, []);
});

test("keepFd: the backing fd stays open until the mapping ends here, then is closed", async () => {
  const fd = memfdCreate("keepfd", 4096);
  for (const end of ["release", "revoke", "close"] as const) {
    const plain = Mapping.fromFd(owner(), grant(), openSync(`/proc/self/fd/${fd}`, "r+"));
    assert.equal(plain.fd, undefined, "without keepFd no fd is kept");
    assert.equal(plain.keepsFd, false);
    await plain.release();
    const before = openFds();
    const own = openSync(`/proc/self/fd/${fd}`, "r+");
    const m = Mapping.fromFd(owner(), grant(), own, true);
    assert.equal(m.fd, own);
    assert.equal(m.keepsFd, true);
    assert.equal(openFds(), before + 1, "the fd is kept");
    if (end === "release") await m.release();
    else if (end === "revoke") m.markRevoked("operator");
    else m.markReleased();
    assert.equal(openFds(), before, `${end}: the kept fd is closed`);
    assert.equal(m.keepsFd, true);
    assert.throws(() => m.fd, MappingGoneError);
  }
  closeFd(fd);
});
