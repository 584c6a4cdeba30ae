// fdBacking: the Backing over an fd that a backend opened for one mapping. It closes the fd exactly
// once, either when the client has its own copy (handedOver, right after delivery) or at release,
// unless the backend lends it (sharedFdBacking: an fd the backend keeps open for many mappings, never
// closed here), and runs the backend's bookkeeping (e.g. the BAR's backing family refcount) once, at release.
// A class, not closures: every live mapping keeps its Backing (100,000 of them are a goal), and
// three closures with their context cost about 220 bytes each time, the class's methods nothing.
import { closeSync } from "node:fs";
import type { Attribute, Backing, BackingKind } from "./backend.js";

const NOTHING = () => {};

class FdBacking implements Backing {
  private live = true;

  constructor(
    readonly kind: BackingKind,
    readonly fd: number,
    readonly mmapOffset: bigint,
    readonly length: bigint,
    readonly effectiveAttribute: Attribute,
    readonly fallbackReason: string,
    private readonly onRelease: () => void,
    /** Ours to close (false: the backend's, lent). */
    private fdOpen: boolean,
  ) {}

  handedOver(): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    closeSync(this.fd);
  }

  release(): void {
    if (!this.live) return;
    this.live = false;
    this.handedOver();
    this.onRelease();
  }
}

export function fdBacking(
  kind: BackingKind,
  fd: number,
  mmapOffset: bigint,
  length: bigint,
  effectiveAttribute: Attribute,
  fallbackReason: string,
  onRelease: () => void = NOTHING,
): Backing {
  return new FdBacking(kind, fd, mmapOffset, length, effectiveAttribute, fallbackReason, onRelease, true);
}

/** A Backing over an fd the backend keeps open for many mappings: handedOver() and release() leave it open. */
export function sharedFdBacking(
  kind: BackingKind,
  fd: number,
  mmapOffset: bigint,
  length: bigint,
  effectiveAttribute: Attribute,
  fallbackReason: string,
): Backing {
  return new FdBacking(kind, fd, mmapOffset, length, effectiveAttribute, fallbackReason, NOTHING, false);
}
