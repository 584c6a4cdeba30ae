// maple/index.ts — the public face of the maple tree: everything a DeviceFile (cookie space) or a device
// (per-BAR page attributes) needs, and nothing of the node internals.

export type { AllocOptions } from "./alloc.js";
export { NoSpaceError, RangeOccupiedError } from "./errors.js";
export { MAX_INDEX } from "./key.js";
export {
  DEFAULT_BRANCH_SLOTS,
  DEFAULT_LEAF_SLOTS,
  type MapleEntry,
  MapleTree,
  type MapleTreeOptions,
} from "./tree.js";
export type { Dump, DumpNode } from "./validate.js";
