// maple/mutate.ts — owns the structural changes: put one entry into a leaf slot, take one out, and keep
// the B-tree shape (split on overflow, borrow or merge on underflow, grow and shrink the root) while
// refreshing each branch's child summary (first, pivot, gap) on the way up.
// Never decides *what* to store: callers (tree.ts) check ranges and overlaps first.

import {
  appendSlots,
  BRANCH_STRIDE,
  closeSlot,
  dropHead,
  LEAF_STRIDE,
  MapleNode,
  openSlot,
  prependSlots,
  summarize,
  type TreeState,
  truncate,
} from "./node.js";
import type { Path } from "./path.js";

/**
 * Insert entry [s, l] at the path's position (the first entry with last >= s, which the caller has
 * checked starts after l). The path must come from a seek on the current tree (or the tree is empty).
 */
export function insertAt(
  s: TreeState,
  p: Path,
  sH: number,
  sL: number,
  lH: number,
  lL: number,
  entry: unknown,
): void {
  s.count++;
  s.version++;
  if (s.root === null) {
    const leaf = new MapleNode(true, s.leafCap);
    writeLeaf(leaf, 0, sH, sL, lH, lL, entry);
    leaf.n = 1;
    s.root = leaf;
    s.height = 1;
    return;
  }
  const H = p.height;
  const leaf = p.nodes[H - 1]!;
  const pos = p.pos;
  openSlot(leaf, pos);
  writeLeaf(leaf, pos, sH, sL, lH, lL, entry);
  leaf.n++;
  let sib = leaf.n > s.leafCap ? splitNode(s, leaf, pos) : null;
  for (let d = H - 2; d >= 0; d--) {
    const parent = p.nodes[d]!;
    const i = p.idx[d]!;
    const changed = summarize(parent.slots[i] as MapleNode, parent.keys, i * BRANCH_STRIDE);
    if (sib !== null) {
      openSlot(parent, i + 1);
      parent.slots[i + 1] = sib;
      summarize(sib, parent.keys, (i + 1) * BRANCH_STRIDE);
      parent.n++;
      sib = parent.n > s.branchCap ? splitNode(s, parent, i + 1) : null;
    } else if (!changed) {
      return;
    }
  }
  if (sib !== null) {
    const old = s.root;
    const root = new MapleNode(false, s.branchCap);
    root.slots[0] = old;
    root.slots[1] = sib;
    root.n = 2;
    summarize(old, root.keys, 0);
    summarize(sib, root.keys, BRANCH_STRIDE);
    s.root = root;
    s.height++;
  }
}

function writeLeaf(leaf: MapleNode, pos: number, sH: number, sL: number, lH: number, lL: number, e: unknown) {
  const b = pos * LEAF_STRIDE;
  const k = leaf.keys;
  k[b] = sH;
  k[b + 1] = sL;
  k[b + 2] = lH;
  k[b + 3] = lL;
  leaf.slots[pos] = e;
}

/**
 * Split an overfull node (capacity + 1 slots) and return the new right sibling. An insert at the very
 * end leaves the left node full (ascending fills, like bottom-up allocation, then pack nodes densely);
 * an insert at the very front leaves the right node full (descending fills, allocRangeReverse);
 * anything else splits evenly.
 */
function splitNode(s: TreeState, node: MapleNode, pos: number): MapleNode {
  const n = node.n;
  const min = node.leaf ? s.leafMin : s.branchMin;
  const left = pos === n - 1 ? n - min : pos === 0 ? min : n >> 1;
  const right = new MapleNode(node.leaf, node.leaf ? s.leafCap : s.branchCap);
  appendSlots(right, node, left, n - left);
  truncate(node, left);
  return right;
}

/** Remove the entry at the path's position and return it. */
export function removeAt(s: TreeState, p: Path): unknown {
  s.count--;
  s.version++;
  const H = p.height;
  const leaf = p.nodes[H - 1]!;
  const entry = leaf.slots[p.pos];
  closeSlot(leaf, p.pos);
  if (H === 1) {
    if (leaf.n === 0) {
      s.root = null;
      s.height = 0;
    }
    return entry;
  }
  for (let d = H - 1; d >= 1; d--) {
    const node = p.nodes[d]!;
    const parent = p.nodes[d - 1]!;
    const i = p.idx[d - 1]!;
    if (node.n < (node.leaf ? s.leafMin : s.branchMin)) {
      rebalance(s, parent, i);
    } else if (!summarize(node, parent.keys, i * BRANCH_STRIDE)) {
      return entry;
    }
  }
  const root = s.root!;
  if (!root.leaf && root.n === 1) {
    s.root = root.slots[0] as MapleNode;
    s.height--;
  }
  return entry;
}

/** Child i of parent is below its minimum: merge it with a neighbour, or even out the two. */
function rebalance(s: TreeState, parent: MapleNode, i: number): void {
  const j = i > 0 ? i - 1 : i;
  const a = parent.slots[j] as MapleNode;
  const b = parent.slots[j + 1] as MapleNode;
  const cap = a.leaf ? s.leafCap : s.branchCap;
  const total = a.n + b.n;
  if (total <= cap) {
    appendSlots(a, b, 0, b.n);
    truncate(b, 0);
    closeSlot(parent, j + 1);
    summarize(a, parent.keys, j * BRANCH_STRIDE);
    return;
  }
  const want = total >> 1;
  if (a.n > want) {
    const move = a.n - want;
    prependSlots(b, a, want, move);
    truncate(a, want);
  } else {
    const move = want - a.n;
    appendSlots(a, b, 0, move);
    dropHead(b, move);
  }
  summarize(a, parent.keys, j * BRANCH_STRIDE);
  summarize(b, parent.keys, (j + 1) * BRANCH_STRIDE);
}
