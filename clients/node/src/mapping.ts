// mapping.ts: owns one client Mapping: the mmap of a broker-granted range (CreateMapping -> ticket ->
// fd channel -> mmap), its typed MMIO accessors, and its end (release() by the client, or revocation
// by the broker). It never touches the memory after it was released or revoked: the memory is
// unmapped first and every accessor then throws MappingGoneError. It never writes through a
// read-only ("r") mapping, which would fault the whole process (SIGSEGV): writes throw instead.
// With keepFd it also keeps the backing fd (close-on-exec) for handing to another process (the
// CLI's exec), and closes it when the mapping ends here.
import { endianness } from "node:os";
import { closeFd, mmap, type Mapping as NativeMapping } from "@vfio-broker/native";
import type { AttributeName, BackingName, ProtName } from "./convert.js";
import { MappingGoneError } from "./errors.js";

/** What a Mapping needs from its DeviceFile: telling the broker it is released. */
export interface MappingOwner {
  readonly id: bigint;
  readonly deviceId: string;
  /** ReleaseMapping on the broker; called once, after the memory is unmapped. */
  releaseMapping(mapping: Mapping): Promise<void>;
}

/** Everything the broker said about a mapping (CreateMapping + FdReply). */
export interface MappingGrant {
  cookie: bigint;
  regionIndex: number;
  regionName: string;
  regionOffset: bigint;
  length: number;
  requestedAttribute: AttributeName;
  effectiveAttribute: AttributeName | "unspecified";
  fallbackReason: string;
  backing: BackingName;
  prot: ProtName;
  /** The offset passed to mmap(2) on the backing fd. */
  mmapOffset: bigint;
}

const MAX_U64 = (1n << 64n) - 1n;

// MMIO accessors use typed arrays, not DataView: V8 compiles DataView accesses into byte-wide loads
// and stores, which real device registers answer with garbage (seen on QEMU's edu device: reads of
// 0). A Uint32Array access is one 32-bit load or store. Typed arrays use host byte order, which is
// the little-endian order PCI registers have on every host vfio-broker supports.
if (endianness() !== "LE") throw new Error("@vfio-broker/client: MMIO accessors need a little-endian host");

export class Mapping {
  readonly deviceFileId: bigint;
  readonly deviceId: string;
  /** Start of this mapping in its DeviceFile's offset space. */
  readonly cookie: bigint;
  readonly regionIndex: number;
  readonly regionName: string;
  /** Offset of the mapped range inside the region, bytes. */
  readonly regionOffset: bigint;
  /** Mapped bytes (a multiple of the page size). */
  readonly length: number;
  readonly requestedAttribute: AttributeName;
  /** What the broker could actually give; check it, it may differ from requestedAttribute. */
  readonly effectiveAttribute: AttributeName | "unspecified";
  /** Why effectiveAttribute differs from requestedAttribute ("" when it does not). */
  readonly fallbackReason: string;
  readonly backing: BackingName;
  readonly prot: ProtName;
  readonly mmapOffset: bigint;

  readonly #owner: MappingOwner;
  readonly #mem: NativeMapping;
  readonly #u8: Uint8Array;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #u64: BigUint64Array;
  /** The backing fd, kept (close-on-exec) when map() was asked to keepFd; closed when the mapping ends. */
  #fd: number | undefined;
  readonly #keeps: boolean;
  #released = false;
  #revoked = false;
  #revokeReason = "";
  #releasing: Promise<void> | undefined;

  /**
   * @internal Use DeviceFile.map(). Takes ownership of `fd`: closes it right after mmap, or with
   * `keepFd` keeps it (it arrived close-on-exec) until the mapping ends; closes it if mmap fails.
   */
  static fromFd(owner: MappingOwner, grant: MappingGrant, fd: number, keepFd = false): Mapping {
    let mem: NativeMapping;
    try {
      mem = mmap(fd, grant.mmapOffset, grant.length, grant.prot);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    if (!keepFd) closeFd(fd); // the mapping keeps the memory; the fd is no longer needed
    return new Mapping(owner, grant, mem, keepFd ? fd : undefined);
  }

  private constructor(owner: MappingOwner, grant: MappingGrant, mem: NativeMapping, fd: number | undefined) {
    this.#owner = owner;
    this.#mem = mem;
    this.#fd = fd;
    this.#keeps = fd !== undefined;
    this.#u8 = new Uint8Array(mem.buffer, 0, grant.length);
    this.#u16 = new Uint16Array(mem.buffer, 0, grant.length >> 1);
    this.#u32 = new Uint32Array(mem.buffer, 0, grant.length >> 2);
    this.#u64 = new BigUint64Array(mem.buffer, 0, grant.length >> 3);
    this.deviceFileId = owner.id;
    this.deviceId = owner.deviceId;
    this.cookie = grant.cookie;
    this.regionIndex = grant.regionIndex;
    this.regionName = grant.regionName;
    this.regionOffset = grant.regionOffset;
    this.length = grant.length;
    this.requestedAttribute = grant.requestedAttribute;
    this.effectiveAttribute = grant.effectiveAttribute;
    this.fallbackReason = grant.fallbackReason;
    this.backing = grant.backing;
    this.prot = grant.prot;
    this.mmapOffset = grant.mmapOffset;
  }

  /** true once release() was called (the memory is unmapped). */
  get released(): boolean {
    return this.#released;
  }

  /** true once the broker revoked this mapping (the memory is unmapped). */
  get revoked(): boolean {
    return this.#revoked;
  }

  /** The broker's reason for the revocation ("operator", "device-gone", ...), "" if not revoked. */
  get revokeReason(): string {
    return this.#revokeReason;
  }

  /**
   * The backing fd (close-on-exec), when map() was asked to keepFd: what to hand to another process,
   * which mmaps it at `mmapOffset` for `length` bytes. undefined without keepFd; throws once the
   * mapping ended here (released or revoked: the fd is closed then). brokerd cannot take back what
   * another process mapped through it.
   */
  get fd(): number | undefined {
    if (!this.#keeps) return undefined;
    this.#live("fd");
    return this.#fd;
  }

  /** true when map() kept the backing fd (keepFd), so another process may hold it. */
  get keepsFd(): boolean {
    return this.#keeps;
  }

  /** The mapped memory itself (no copy). Throws once released or revoked. */
  get buffer(): ArrayBuffer {
    this.#live("buffer");
    return this.#mem.buffer;
  }

  // Register accesses must be naturally aligned (offset a multiple of the access width), as on
  // the bus; each is one load or store of that width.
  read8(offset: number): number {
    return this.#u8[this.#at("read8", offset, 1, false)]!;
  }
  read16(offset: number): number {
    return this.#u16[aligned("read16", this.#at("read16", offset, 2, false), 2)]!;
  }
  read32(offset: number): number {
    return this.#u32[aligned("read32", this.#at("read32", offset, 4, false), 4)]!;
  }
  /** Note: V8 may split a 64-bit access into two 32-bit ones. */
  read64(offset: number): bigint {
    return this.#u64[aligned("read64", this.#at("read64", offset, 8, false), 8)]!;
  }

  write8(offset: number, value: number): void {
    const at = this.#at("write8", offset, 1, true);
    this.#u8[at] = checkValue("write8", value, 0xff);
  }
  write16(offset: number, value: number): void {
    const at = aligned("write16", this.#at("write16", offset, 2, true), 2);
    this.#u16[at] = checkValue("write16", value, 0xffff);
  }
  write32(offset: number, value: number): void {
    const at = aligned("write32", this.#at("write32", offset, 4, true), 4);
    this.#u32[at] = checkValue("write32", value, 0xffffffff);
  }
  /** Note: V8 may split a 64-bit access into two 32-bit ones. */
  write64(offset: number, value: bigint): void {
    const at = aligned("write64", this.#at("write64", offset, 8, true), 8);
    if (typeof value !== "bigint" || value < 0n || value > MAX_U64)
      throw new RangeError(`write64: value must be a bigint in [0, 2^64-1], got ${String(value)}`);
    this.#u64[at] = value;
  }

  /** A copy of `length` bytes from `offset`. */
  readBytes(offset: number, length: number): Buffer {
    const at = this.#at("readBytes", offset, length, false);
    return Buffer.from(new Uint8Array(this.#mem.buffer, at, length));
  }

  writeBytes(offset: number, data: Uint8Array): void {
    const at = this.#at("writeBytes", offset, data.length, true);
    new Uint8Array(this.#mem.buffer, at, data.length).set(data);
  }

  /** Unmaps the memory and releases the mapping on the broker. Idempotent; safe after a revocation. */
  release(): Promise<void> {
    if (this.#releasing) return this.#releasing;
    const wasRevoked = this.#revoked;
    this.#released = true;
    this.#end();
    // A revoked mapping is already gone on the broker: nothing to release there.
    this.#releasing = wasRevoked ? Promise.resolve() : this.#owner.releaseMapping(this);
    return this.#releasing;
  }

  /** @internal The broker took it away: unmap now (before anyone is told), and remember why. */
  markRevoked(reason: string): void {
    if (this.#released || this.#revoked) return;
    this.#revoked = true;
    this.#revokeReason = reason;
    this.#end();
  }

  /** @internal The client is closing and releases everything by CloseDevice: only unmap. */
  markReleased(): void {
    if (this.#released) return;
    this.#released = true;
    this.#releasing ??= Promise.resolve();
    this.#end();
  }

  /** Unmaps the memory and closes the kept fd, if any. */
  #end(): void {
    this.#mem.unmap();
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    closeFd(fd);
  }

  toJSON(): Record<string, unknown> {
    return {
      deviceFileId: this.deviceFileId.toString(),
      deviceId: this.deviceId,
      cookie: this.cookie.toString(),
      regionIndex: this.regionIndex,
      regionName: this.regionName,
      regionOffset: this.regionOffset.toString(),
      length: this.length,
      requestedAttribute: this.requestedAttribute,
      effectiveAttribute: this.effectiveAttribute,
      fallbackReason: this.fallbackReason,
      backing: this.backing,
      prot: this.prot,
      released: this.#released,
      revoked: this.#revoked,
    };
  }

  #live(what: string): void {
    if (this.#revoked)
      throw new MappingGoneError(
        `${what}: mapping ${this.cookie} of ${this.deviceId} was revoked by the broker (${this.#revokeReason}); its memory is unmapped, create a new mapping`,
      );
    if (this.#released)
      throw new MappingGoneError(
        `${what}: mapping ${this.cookie} of ${this.deviceId} was released; its memory is unmapped, create a new mapping`,
      );
  }

  #at(what: string, offset: number, size: number, write: boolean): number {
    this.#live(what);
    if (write && this.prot !== "rw")
      throw new TypeError(
        `${what}: mapping ${this.cookie} is read-only (prot "r"); map it with prot "rw" to write`,
      );
    return checkRange(what, offset, size, this.length);
  }
}

/** Validates [offset, offset+size) inside a `length`-byte mapping; returns offset. Exported for tests. */
export function checkRange(what: string, offset: number, size: number, length: number): number {
  if (!Number.isSafeInteger(offset) || offset < 0)
    throw new RangeError(`${what}: offset must be a non-negative integer, got ${String(offset)}`);
  if (!Number.isSafeInteger(size) || size < 0)
    throw new RangeError(`${what}: length must be a non-negative integer, got ${String(size)}`);
  if (offset + size > length) {
    const last = length - size;
    const valid =
      last >= 0 ? `valid offsets are 0..0x${last.toString(16)}` : `it is shorter than ${size} bytes`;
    throw new RangeError(
      `${what}: ${size} byte(s) at offset 0x${offset.toString(16)} are outside the ${length}-byte mapping; ${valid}`,
    );
  }
  return offset;
}

function checkValue(what: string, value: number, max: number): number {
  if (!Number.isInteger(value) || value < 0 || value > max)
    throw new RangeError(
      `${what}: value must be an integer in [0, 0x${max.toString(16)}], got ${String(value)}`,
    );
  return value;
}

/** Index into a typed array of `width`-byte elements for byte offset `at`; throws if unaligned. */
function aligned(op: string, at: number, width: number): number {
  if (at % width !== 0)
    throw new RangeError(
      `${op}: offset 0x${at.toString(16)} is not ${width}-byte aligned; registers are accessed at their natural alignment (use read8/readBytes for unaligned bytes)`,
    );
  return at / width;
}
