// fdBacking: the Backing over an fd that a backend opened for one mapping. It closes the fd exactly
// once, either when the client has its own copy (handedOver, right after delivery) or at release,
// and runs the backend's bookkeeping (e.g. the BAR's backing family refcount) once, at release.
import { closeSync } from "node:fs";
import type { Attribute, Backing, BackingKind } from "./backend.js";

export function fdBacking(
  kind: BackingKind,
  fd: number,
  mmapOffset: bigint,
  length: bigint,
  effectiveAttribute: Attribute,
  fallbackReason: string,
  onRelease: () => void = () => {},
): Backing {
  let fdOpen = true;
  let live = true;
  const closeFd = () => {
    if (!fdOpen) return;
    fdOpen = false;
    closeSync(fd);
  };
  return {
    kind,
    fd,
    mmapOffset,
    length,
    effectiveAttribute,
    fallbackReason,
    handedOver: closeFd,
    release() {
      if (!live) return;
      live = false;
      closeFd();
      onRelease();
    },
  };
}
