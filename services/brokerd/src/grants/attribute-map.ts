// AttributeMap: per device, one MapleTree per region over page numbers, holding the attribute
// every live mapping of those pages uses and how many mappings share it. It refuses a mapping
// whose pages are already mapped, by anyone, with another attribute: x86 PAT refuses conflicting
// memory types for one physical range, and the kernel would fail (or worse, silently alias) later.

import type { Attribute } from "../devices/backend.js";
import { formatBytes, hex } from "../devices/regions.js";
import { precondition } from "../errors.js";
import { MapleTree } from "../maple/index.js";

interface PageUse {
  attribute: Attribute;
  /** Number of live mappings covering these pages. */
  refs: number;
}

export class AttributeMap {
  private readonly trees = new Map<number, MapleTree<PageUse>>();

  constructor(
    readonly deviceId: string,
    private readonly pageSize: bigint,
  ) {}

  private tree(regionIndex: number): MapleTree<PageUse> {
    let t = this.trees.get(regionIndex);
    if (!t) {
      t = new MapleTree<PageUse>();
      this.trees.set(regionIndex, t);
    }
    return t;
  }

  private pages(offset: bigint, length: bigint): [bigint, bigint] {
    return [offset / this.pageSize, (offset + length - 1n) / this.pageSize];
  }

  /** Throws FAILED_PRECONDITION naming the conflicting range if any page has another attribute. */
  check(regionIndex: number, regionName: string, offset: bigint, length: bigint, attribute: Attribute): void {
    const [first, last] = this.pages(offset, length);
    for (const e of this.tree(regionIndex).collect(first, last)) {
      if (e.entry.attribute !== attribute) {
        const s = (e.start > first ? e.start : first) * this.pageSize;
        const l = ((e.last < last ? e.last : last) + 1n) * this.pageSize;
        throw precondition(
          `${this.deviceId} ${regionName} bytes ${hex(s)}-${hex(l - 1n)} (${formatBytes(l - s)}) are already mapped ` +
            `${e.entry.attribute} by ${e.entry.refs} live mapping(s); one page cannot have two memory types (x86 PAT). ` +
            `Map them ${e.entry.attribute}, or choose a range outside ${hex(s)}-${hex(l - 1n)}`,
          "attribute_conflict",
        );
      }
    }
  }

  /** Records one more mapping of the range with attribute (after check()). */
  acquire(regionIndex: number, offset: bigint, length: bigint, attribute: Attribute): void {
    const [first, last] = this.pages(offset, length);
    const t = this.tree(regionIndex);
    const pieces = t.collect(first, last);
    let cur = first;
    for (const e of pieces) {
      const s = e.start > first ? e.start : first;
      const l = e.last < last ? e.last : last;
      if (cur < s) t.store(cur, s - 1n, { attribute, refs: 1 });
      t.store(s, l, { attribute, refs: e.entry.refs + 1 });
      cur = l + 1n;
    }
    if (cur <= last) t.store(cur, last, { attribute, refs: 1 });
  }

  /** Drops one mapping of the range; pages no mapping uses any more are forgotten. */
  release(regionIndex: number, offset: bigint, length: bigint): void {
    const [first, last] = this.pages(offset, length);
    const t = this.tree(regionIndex);
    for (const e of t.collect(first, last)) {
      const s = e.start > first ? e.start : first;
      const l = e.last < last ? e.last : last;
      t.store(s, l, { attribute: e.entry.attribute, refs: e.entry.refs - 1 });
      if (e.entry.refs - 1 <= 0) t.erase(s);
    }
  }

  /** Entries in use, for the admin console and metrics. */
  entryCount(): number {
    let n = 0;
    for (const t of this.trees.values()) n += t.size;
    return n;
  }
}
