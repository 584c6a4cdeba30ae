// maple/path.ts — owns the walk from the root to one leaf slot (the kernel's ma_state): seek to an
// index, then step to the next or previous entry. Mutations use the recorded path to fix summaries
// on the way back up. Never changes the tree.

import { branchLowerBound, LEAF_STRIDE, leafLowerBound, type MapleNode, type TreeState } from "./node.js";

export class Path {
  /** nodes[d] is the node at depth d (0 = root); nodes[height-1] is the leaf. */
  readonly nodes: MapleNode[] = [];
  /** idx[d] is the child taken at nodes[d] (branches only). */
  readonly idx: number[] = [];
  height = 0;
  /** Slot in the leaf; may equal leaf.n, meaning "past the last entry of the tree". */
  pos = 0;

  /**
   * Walk to the first entry whose last >= (h, l). Returns false when the tree is empty.
   * If no entry qualifies, ends on the rightmost leaf with pos === n.
   */
  seek(s: TreeState, h: number, l: number): boolean {
    let node = s.root;
    if (node === null) {
      this.height = 0;
      return false;
    }
    const H = s.height;
    for (let d = 0; d < H - 1; d++) {
      this.nodes[d] = node;
      let i = branchLowerBound(node, h, l);
      if (i === node.n) i = node.n - 1;
      this.idx[d] = i;
      node = node.slots[i] as MapleNode;
    }
    this.nodes[H - 1] = node;
    this.height = H;
    this.pos = leafLowerBound(node, h, l);
    return true;
  }

  leaf(): MapleNode {
    return this.nodes[this.height - 1]!;
  }

  /** True if the path points at an entry (not past the end, not an empty tree). */
  valid(): boolean {
    return this.height > 0 && this.pos < this.leaf().n;
  }

  /** Move to the next entry; false (and pos = n) at the end. */
  next(): boolean {
    const leaf = this.leaf();
    if (this.pos + 1 < leaf.n) {
      this.pos++;
      return true;
    }
    let d = this.height - 2;
    while (d >= 0 && this.idx[d]! + 1 >= this.nodes[d]!.n) d--;
    if (d < 0) {
      this.pos = leaf.n;
      return false;
    }
    this.idx[d]!++;
    let node = this.nodes[d]!.slots[this.idx[d]!] as MapleNode;
    for (d++; d < this.height - 1; d++) {
      this.nodes[d] = node;
      this.idx[d] = 0;
      node = node.slots[0] as MapleNode;
    }
    this.nodes[this.height - 1] = node;
    this.pos = 0;
    return true;
  }

  /** Move to the previous entry; false at the start (path then points at slot 0 of the first leaf). */
  prev(): boolean {
    if (this.pos > 0) {
      this.pos--;
      return true;
    }
    let d = this.height - 2;
    while (d >= 0 && this.idx[d] === 0) d--;
    if (d < 0) return false;
    this.idx[d]!--;
    let node = this.nodes[d]!.slots[this.idx[d]!] as MapleNode;
    for (d++; d < this.height - 1; d++) {
      this.nodes[d] = node;
      this.idx[d] = node.n - 1;
      node = node.slots[node.n - 1] as MapleNode;
    }
    this.nodes[this.height - 1] = node;
    this.pos = node.n - 1;
    return true;
  }

  /** Word offset of the current entry in leaf().keys. */
  base(): number {
    return this.pos * LEAF_STRIDE;
  }
}
