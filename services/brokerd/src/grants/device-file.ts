// DeviceFile: one client's open view of one device (the kernel's vfio_device_file). It owns one
// MapleTree over its 64-bit offset space: a compat entry per region at its layout cookie, and an
// alias range per Mapping. Every mmap, read and write the client addresses by offset is a lookup
// here. It holds no fds itself; the Backings of its Mappings do.
import type { Attribute, Backing, DeviceInfo, Prot, RegionInfo } from "../devices/backend.js";
import { hex, regionName } from "../devices/regions.js";
import { exhausted, invalid, notFound } from "../errors.js";
import { MapleTree, NoSpaceError } from "../maple/index.js";
import { type Layout, planLayout } from "./layout.js";

export type MappingState = "pending" | "delivered";

export interface Mapping {
  cookie: bigint;
  deviceFile: DeviceFile;
  region: RegionInfo;
  regionOffset: bigint;
  length: bigint;
  requestedAttribute: Attribute;
  effectiveAttribute: Attribute;
  fallbackReason: string;
  prot: Prot;
  backing: Backing;
  state: MappingState;
  ticket: string;
  /** When the ticket expires (ms since the epoch). */
  ticketExpiresAt: number;
  /** Name of the policy rule that allowed it (audit). */
  rule: string;
  createdAt: number;
  /** The CreateMapping request id ("" if none): a retry of that call gets this mapping back. */
  requestId: string;
  /**
   * CreateMapping references held on this cookie (1 when made; one more per CreateMapping of the
   * same range, attribute and prot; one less per ReleaseMapping; it ends at 0).
   */
  refs: number;
}

/**
 * Where a mapping starts, as one number (region index + page of its offset): the sharing index's
 * key. A number, not a string, because every live mapping has one (100,000 of them are a goal).
 */
function startKey(regionIndex: number, offset: bigint, pageSize: bigint): number {
  return Number(offset / pageSize) * 16 + regionIndex;
}

/** What makes two CreateMappings in one device file the same mapping (one cookie, refcounted). */
function same(m: Mapping, length: bigint, attribute: Attribute, prot: Prot): boolean {
  return m.length === length && m.requestedAttribute === attribute && m.prot === prot;
}

/**
 * What the device file's offset space holds: a region's compat range, a live mapping, or the
 * cookie of a revoked mapping whose holder may still map it (a hold, grants/holds.ts): that cookie
 * is not given to another mapping until the hold ends, so a release of it can only mean the hold.
 */
export type TreeEntry =
  | { kind: "region"; region: RegionInfo }
  | { kind: "mapping"; mapping: Mapping }
  | { kind: "held"; cookie: bigint; region: RegionInfo };

/** What an offset in the device file's space resolves to. */
export interface Resolved {
  region: RegionInfo;
  /** Offset inside the region. */
  regionOffset: bigint;
  /** Bytes from regionOffset to the end of the entry. */
  span: bigint;
  mapping?: Mapping;
}

const NO_MAPPINGS: ReadonlyMap<bigint, Mapping> = new Map();

export class DeviceFile {
  readonly tree = new MapleTree<TreeEntry>();
  /** Its live mappings by cookie (the Map is made with the first: an idle open device file has none). */
  get mappings(): ReadonlyMap<bigint, Mapping> {
    return this.#mappings ?? NO_MAPPINGS;
  }
  #mappings: Map<bigint, Mapping> | undefined;
  readonly regionCookies = new Map<number, bigint>();
  /** Live mappings by where they start (startKey): what a CreateMapping of the same range shares
   * (made with the first mapping: an open device file with none holds no empty Map). */
  private starts: Map<number, Mapping | Mapping[]> | undefined;
  readonly aliasBase: bigint;
  openedAt = Date.now();
  /** The OpenDevice request id ("" if none). */
  requestId = "";

  constructor(
    readonly id: bigint,
    readonly sessionId: string,
    readonly device: DeviceInfo,
    readonly layout: Layout,
    private readonly pageSize: bigint,
  ) {
    const plan = planLayout(layout, device.regions, pageSize);
    for (const { region, cookie } of plan.placements) {
      this.regionCookies.set(region.index, cookie);
      if (region.size > 0n) this.tree.insert(cookie, cookie + region.size - 1n, { kind: "region", region });
    }
    this.aliasBase = plan.aliasBase;
  }

  region(index: number): RegionInfo {
    const r = this.device.regions.find((x) => x.index === index);
    if (!r)
      throw notFound(
        `device ${this.device.id} has no region ${index} (${regionName(index)}); its regions are ` +
          this.device.regions.map((x) => `${x.index} (${x.name})`).join(", "),
        "unknown_region",
      );
    return r;
  }

  regionCookie(index: number): bigint {
    this.region(index);
    return this.regionCookies.get(index)!;
  }

  /** Allocates the lowest free alias range for a mapping of `length` bytes and records it. */
  addMapping(build: (cookie: bigint) => Mapping, length: bigint): Mapping {
    let cookie: bigint;
    try {
      cookie = this.tree.allocRange(length, { align: this.pageSize, min: this.aliasBase });
    } catch (e) {
      if (e instanceof NoSpaceError)
        throw exhausted(
          `device file ${this.id} has no free ${length}-byte range left in its offset space`,
          "limit:space",
        );
      throw e;
    }
    const m = build(cookie);
    this.tree.insert(cookie, cookie + length - 1n, { kind: "mapping", mapping: m });
    this.#mappings ??= new Map();
    this.#mappings.set(cookie, m);
    this.index(m);
    return m;
  }

  /** The live mapping of exactly this range, requested attribute and prot, if there is one. */
  sharedMapping(
    regionIndex: number,
    offset: bigint,
    length: bigint,
    attribute: Attribute,
    prot: Prot,
  ): Mapping | undefined {
    const at = this.starts?.get(startKey(regionIndex, offset, this.pageSize));
    if (at === undefined) return undefined;
    if (!Array.isArray(at)) return same(at, length, attribute, prot) ? at : undefined;
    return at.find((m) => same(m, length, attribute, prot));
  }

  private index(m: Mapping): void {
    const k = startKey(m.region.index, m.regionOffset, this.pageSize);
    this.starts ??= new Map();
    const starts = this.starts;
    const at = starts.get(k);
    if (at === undefined) starts.set(k, m);
    else if (Array.isArray(at)) at.push(m);
    else starts.set(k, [at, m]);
  }

  private unindex(m: Mapping): void {
    const k = startKey(m.region.index, m.regionOffset, this.pageSize);
    const at = this.starts?.get(k);
    if (at === m) this.starts!.delete(k);
    else if (Array.isArray(at)) {
      const rest = at.filter((x) => x !== m);
      this.starts!.set(k, rest.length === 1 ? rest[0]! : rest);
    }
  }

  /** Puts back a mapping recorded before a restart at its own cookie (restore.ts). */
  restoreMapping(m: Mapping): void {
    if (m.cookie < this.aliasBase || this.tree.find(m.cookie, m.cookie + m.length - 1n))
      throw invalid(`cookie ${hex(m.cookie)} of device file ${this.id} is not free`, "restore");
    this.tree.insert(m.cookie, m.cookie + m.length - 1n, { kind: "mapping", mapping: m });
    this.#mappings ??= new Map();
    this.#mappings.set(m.cookie, m);
    this.index(m);
  }

  mapping(cookie: bigint): Mapping {
    const m = this.mappings.get(cookie);
    if (!m) {
      const e = this.tree.load(cookie);
      const hint =
        e?.kind === "region"
          ? `; ${hex(cookie)} is inside the compat range of ${e.region.name}, not a mapping cookie`
          : "";
      throw notFound(`device file ${this.id} has no mapping with cookie ${cookie}${hint}`, "unknown_cookie");
    }
    return m;
  }

  /** m leaves the device file; with keepCookie (it is held) its cookie stays taken until unheld. */
  removeMapping(m: Mapping, keepCookie = false): void {
    this.unindex(m);
    this.#mappings?.delete(m.cookie);
    this.tree.erase(m.cookie);
    if (keepCookie) this.reserveCookie(m.cookie, m.length, m.region);
  }

  /** A held cookie (a revoked mapping still mapped by its holder) stays out of allocation. */
  reserveCookie(cookie: bigint, length: bigint, region: RegionInfo): void {
    if (this.tree.find(cookie, cookie + length - 1n)) return;
    this.tree.insert(cookie, cookie + length - 1n, { kind: "held", cookie, region });
  }

  /** The hold on cookie ended: the cookie may be given to a new mapping. */
  releaseCookie(cookie: bigint): void {
    if (this.tree.load(cookie)?.kind === "held") this.tree.erase(cookie);
  }

  /** Resolves [offset, offset+length) to one tree entry; the access must not leave it. */
  resolve(offset: bigint, length: number): Resolved {
    const e = this.tree.find(offset, offset);
    if (!e)
      throw invalid(
        `offset ${hex(offset)} is not inside any region or mapping of device file ${this.id}; ` +
          `region cookies: ${[...this.regionCookies].map(([i, c]) => `${regionName(i)}=${hex(c)}`).join(", ")}`,
        "range",
      );
    const into = offset - e.start;
    const span = e.last - offset + 1n;
    if (BigInt(length) > span)
      throw invalid(
        `access ${hex(offset)}+${length} leaves the entry ${hex(e.start)}-${hex(e.last)}; it has ${span} bytes from there`,
        "range",
      );
    if (e.entry.kind === "region") return { region: e.entry.region, regionOffset: into, span };
    if (e.entry.kind === "held")
      throw invalid(
        `offset ${hex(offset)} is in mapping ${e.entry.cookie}, which was revoked; it ends once its holder releases it or exits`,
        "range",
      );
    const m = e.entry.mapping;
    return { region: m.region, regionOffset: m.regionOffset + into, span, mapping: m };
  }
}
