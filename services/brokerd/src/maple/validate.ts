// maple/validate.ts — owns the invariant checker and the structure dump. validate() recomputes every
// summary from scratch with bigints (independent of node.ts's word arithmetic) and throws a
// description of the first violation. dump() renders nodes as JSON-able objects (bigints as decimal strings).
// Never repairs anything.

import { join } from "./key.js";
import { BRANCH_STRIDE, LEAF_STRIDE, type MapleNode, type TreeState } from "./node.js";

interface Summary {
  first: bigint;
  last: bigint;
  gap: bigint;
}

interface Walk {
  s: TreeState;
  count: number;
  prevLast: bigint;
  leafDepth: number;
}

export function validate(s: TreeState): void {
  const fail = (what: string): never => {
    throw new Error(`maple tree invariant violated: ${what}`);
  };
  if (s.root === null) {
    if (s.height !== 0 || s.count !== 0) fail(`empty root but height ${s.height}, count ${s.count}`);
    return;
  }
  const w: Walk = { s, count: 0, prevLast: -1n, leafDepth: -1 };
  walk(w, s.root, 0, "root", fail);
  if (w.leafDepth + 1 !== s.height) fail(`height is ${s.height} but leaves are at depth ${w.leafDepth}`);
  if (w.count !== s.count) fail(`size is ${s.count} but the leaves hold ${w.count} entries`);
  if (!s.root.leaf && s.root.n < 2) fail(`root alloc node has ${s.root.n} child; it should have collapsed`);
}

function walk(
  w: Walk,
  node: MapleNode,
  depth: number,
  where: string,
  fail: (what: string) => never,
): Summary {
  const s = w.s;
  const cap = node.leaf ? s.leafCap : s.branchCap;
  const min = depth === 0 ? 1 : node.leaf ? s.leafMin : s.branchMin;
  if (node.n > cap || node.n < min) fail(`${where} holds ${node.n} slots, allowed ${min} .. ${cap}`);
  for (let x = node.n; x < node.slots.length; x++) {
    if (node.slots[x] !== undefined) fail(`${where} slot ${x} is beyond n=${node.n} but not cleared`);
  }
  const k = node.keys;
  if (node.leaf) {
    if (w.leafDepth === -1) w.leafDepth = depth;
    else if (w.leafDepth !== depth)
      fail(`${where} is a leaf at depth ${depth}, others are at ${w.leafDepth}`);
    let gap = 0n;
    for (let j = 0; j < node.n; j++) {
      const b = j * LEAF_STRIDE;
      const start = join(k[b]!, k[b + 1]!);
      const last = join(k[b + 2]!, k[b + 3]!);
      if (start > last) fail(`${where} slot ${j}: start ${start} > last ${last}`);
      if (start <= w.prevLast)
        fail(`${where} slot ${j}: [${start}, ${last}] overlaps or precedes ${w.prevLast}`);
      if (j > 0 && start - w.prevLast - 1n > gap) gap = start - w.prevLast - 1n;
      w.prevLast = last;
      w.count++;
    }
    return {
      first: join(k[0]!, k[1]!),
      last: join(k[(node.n - 1) * LEAF_STRIDE + 2]!, k[(node.n - 1) * LEAF_STRIDE + 3]!),
      gap,
    };
  }
  let gap = 0n;
  let prev: Summary | undefined;
  let first = 0n;
  for (let i = 0; i < node.n; i++) {
    const child = node.slots[i] as MapleNode;
    const at = `${where}.${i}`;
    if (!(typeof child === "object" && child !== null && "keys" in child)) fail(`${at} is not a node`);
    const c = walk(w, child, depth + 1, at, fail);
    const b = i * BRANCH_STRIDE;
    const sf = join(k[b]!, k[b + 1]!);
    const sl = join(k[b + 2]!, k[b + 3]!);
    const sg = join(k[b + 4]!, k[b + 5]!);
    if (sf !== c.first) fail(`${where} first[${i}] is ${sf}, child starts at ${c.first}`);
    if (sl !== c.last) fail(`${where} pivot[${i}] is ${sl}, child ends at ${c.last}`);
    if (sg !== c.gap) fail(`${where} gap[${i}] is ${sg}, largest free run inside the child is ${c.gap}`);
    if (c.gap > gap) gap = c.gap;
    if (prev !== undefined) {
      if (c.first <= prev.last)
        fail(`${where} child ${i} starts at ${c.first}, not after pivot ${prev.last}`);
      if (c.first - prev.last - 1n > gap) gap = c.first - prev.last - 1n;
    } else {
      first = c.first;
    }
    prev = c;
  }
  return { first, last: prev!.last, gap };
}

export type DumpNode =
  | { kind: "range"; entries: { start: string; last: string; entry: unknown }[] }
  | { kind: "alloc"; firsts: string[]; pivots: string[]; gaps: string[]; children: DumpNode[] };

export interface Dump {
  size: number;
  depth: number;
  root: DumpNode | null;
}

export function dump<T>(s: TreeState, describe: (entry: T) => unknown): Dump {
  return { size: s.count, depth: s.height, root: s.root === null ? null : dumpNode(s.root, describe) };
}

function dumpNode<T>(node: MapleNode, describe: (entry: T) => unknown): DumpNode {
  const k = node.keys;
  const str = (b: number) => join(k[b]!, k[b + 1]!).toString();
  if (node.leaf) {
    const entries = [];
    for (let j = 0; j < node.n; j++) {
      const b = j * LEAF_STRIDE;
      entries.push({ start: str(b), last: str(b + 2), entry: describe(node.slots[j] as T) });
    }
    return { kind: "range", entries };
  }
  const firsts = [];
  const pivots = [];
  const gaps = [];
  const children = [];
  for (let i = 0; i < node.n; i++) {
    const b = i * BRANCH_STRIDE;
    firsts.push(str(b));
    pivots.push(str(b + 2));
    gaps.push(str(b + 4));
    children.push(dumpNode(node.slots[i] as MapleNode, describe));
  }
  return { kind: "alloc", firsts, pivots, gaps, children };
}
