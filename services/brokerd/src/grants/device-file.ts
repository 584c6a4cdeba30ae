// DeviceFile: one client's open view of one device (the kernel's vfio_device_file). It owns its
// 64-bit offset space: a compat range per region at its layout cookie, and an alias range per
// Mapping. Every mmap, read and write the client addresses by offset is a lookup here. The space
// is a MapleTree made with the first mapping (or held cookie): until then it holds only the
// regions, whose ranges are resolved from the layout's cookies, shared by every device file of the
// same device and layout (an idle open device file holds no tree: its root leaf alone was ~1.4 KB).
// It holds no fds itself; the Backings of its Mappings do.
import type { Attribute, Backing, DeviceInfo, Prot, RegionInfo } from "../devices/backend.js";
import { hex, regionName } from "../devices/regions.js";
import { exhausted, invalid, notFound } from "../errors.js";
import { type MapleEntry, MapleTree, NoSpaceError } from "../maple/index.js";
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

/** Where a device's regions sit in one layout: the same for every device file of it (shared). */
interface Placed {
  readonly layout: Layout;
  readonly pageSize: bigint;
  /** Compat cookie by region index (undefined: no such region). */
  readonly cookies: readonly (bigint | undefined)[];
  /** The regions' ranges in the tree, lowest first (regions of size 0 have none). */
  readonly ranges: readonly { start: bigint; last: bigint; entry: TreeEntry }[];
  readonly aliasBase: bigint;
}

/** Plans by the device's regions (a device's RegionInfo list is fixed once listed). */
const placedBy = new WeakMap<readonly RegionInfo[], Placed[]>();

function placed(device: DeviceInfo, layout: Layout, pageSize: bigint): Placed {
  const plans = placedBy.get(device.regions);
  const hit = plans?.find((p) => p.layout === layout && p.pageSize === pageSize);
  if (hit) return hit;
  const plan = planLayout(layout, device.regions, pageSize);
  const cookies: (bigint | undefined)[] = [];
  const ranges: Placed["ranges"][number][] = [];
  for (const { region, cookie } of plan.placements) {
    cookies[region.index] = cookie;
    if (region.size > 0n)
      ranges.push({ start: cookie, last: cookie + region.size - 1n, entry: { kind: "region", region } });
  }
  ranges.sort((a, b) => (a.start < b.start ? -1 : 1));
  const p: Placed = { layout, pageSize, cookies, ranges, aliasBase: plan.aliasBase };
  if (plans) plans.push(p);
  else placedBy.set(device.regions, [p]);
  return p;
}

export class DeviceFile {
  /** The offset space as a tree, made on first use by a mapping or a held cookie. */
  #tree: MapleTree<TreeEntry> | undefined;
  readonly #placed: Placed;
  /** Its live mappings by cookie (the Map is made with the first: an idle open device file has none). */
  get mappings(): ReadonlyMap<bigint, Mapping> {
    return this.#mappings ?? NO_MAPPINGS;
  }
  #mappings: Map<bigint, Mapping> | undefined;
  /** Live mappings by where they start (startKey): what a CreateMapping of the same range shares
   * (made with the first mapping: an open device file with none holds no empty Map). */
  private starts: Map<number, Mapping | Mapping[]> | undefined;
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
    this.#placed = placed(device, layout, pageSize);
  }

  /** Lowest offset an alias range may start at. */
  get aliasBase(): bigint {
    return this.#placed.aliasBase;
  }

  /** The tree, made now if this is its first use: the regions' ranges go in first. */
  private space(): MapleTree<TreeEntry> {
    this.#tree ??= this.regionsTree();
    return this.#tree;
  }

  private regionsTree(): MapleTree<TreeEntry> {
    const t = new MapleTree<TreeEntry>();
    for (const r of this.#placed.ranges) t.insert(r.start, r.last, r.entry);
    return t;
  }

  /** The entry whose range holds offset (without a tree: a region's, from the layout). */
  private entryAt(offset: bigint): MapleEntry<TreeEntry> | undefined {
    if (this.#tree) return this.#tree.find(offset, offset);
    return this.#placed.ranges.find((r) => r.start <= offset && offset <= r.last);
  }

  /**
   * The offset space as a tree for reading (admin dumps): the device file's own once it has one,
   * else one made for this call. The caller never changes it.
   */
  treeView(): MapleTree<TreeEntry> {
    return this.#tree ?? this.regionsTree();
  }

  /** Entries in the offset space (regions, mappings, held cookies). */
  get entryCount(): number {
    return this.#tree?.size ?? this.#placed.ranges.length;
  }

  /** Levels of the tree (the regions alone, at most NUM_REGIONS, fit its one root leaf). */
  get treeDepth(): number {
    return this.#tree?.depth ?? (this.#placed.ranges.length > 0 ? 1 : 0);
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
    return this.#placed.cookies[index]!;
  }

  /** Allocates the lowest free alias range for a mapping of `length` bytes and records it. */
  addMapping(build: (cookie: bigint) => Mapping, length: bigint): Mapping {
    let cookie: bigint;
    try {
      cookie = this.space().allocRange(length, { align: this.pageSize, min: this.aliasBase });
    } catch (e) {
      if (e instanceof NoSpaceError)
        throw exhausted(
          `device file ${this.id} has no free ${length}-byte range left in its offset space`,
          "limit:space",
        );
      throw e;
    }
    const m = build(cookie);
    this.space().insert(cookie, cookie + length - 1n, { kind: "mapping", mapping: m });
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
    const t = this.space();
    if (m.cookie < this.aliasBase || t.find(m.cookie, m.cookie + m.length - 1n))
      throw invalid(`cookie ${hex(m.cookie)} of device file ${this.id} is not free`, "restore");
    t.insert(m.cookie, m.cookie + m.length - 1n, { kind: "mapping", mapping: m });
    this.#mappings ??= new Map();
    this.#mappings.set(m.cookie, m);
    this.index(m);
  }

  mapping(cookie: bigint): Mapping {
    const m = this.mappings.get(cookie);
    if (!m) {
      const e = this.entryAt(cookie)?.entry;
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
    this.space().erase(m.cookie);
    if (keepCookie) this.reserveCookie(m.cookie, m.length, m.region);
  }

  /** A held cookie (a revoked mapping still mapped by its holder) stays out of allocation. */
  reserveCookie(cookie: bigint, length: bigint, region: RegionInfo): void {
    const t = this.space();
    if (t.find(cookie, cookie + length - 1n)) return;
    t.insert(cookie, cookie + length - 1n, { kind: "held", cookie, region });
  }

  /** The hold on cookie ended: the cookie may be given to a new mapping. */
  releaseCookie(cookie: bigint): void {
    // No tree: nothing was ever held in this device file.
    if (this.#tree?.load(cookie)?.kind === "held") this.#tree.erase(cookie);
  }

  /** Resolves [offset, offset+length) to one tree entry; the access must not leave it. */
  resolve(offset: bigint, length: number): Resolved {
    const e = this.entryAt(offset);
    if (!e)
      throw invalid(
        `offset ${hex(offset)} is not inside any region or mapping of device file ${this.id}; ` +
          `region cookies: ${this.#placed.cookies.flatMap((c, i) => (c === undefined ? [] : [`${regionName(i)}=${hex(c)}`])).join(", ")}`,
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
