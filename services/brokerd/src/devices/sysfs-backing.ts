// The sysfs-family backing of a Mapping, for both PCI backends: which file a request gets
// (resourceN_wc for WC, resourceN for UC) and the Backing over its fd. A resourceN fd can map only
// its own BAR, so no device fd (config space, reset, IRQs, other BARs) ever leaves brokerd this way.
// Never hands out WC where the kernel has no `_wc` file: it falls back to UC only when the request
// allows it, and says so. Never decides between backing families (vfio-backings.ts does that).
import { invalid } from "../errors.js";
import type { Attribute, Backing, BackingRequest } from "./backend.js";
import { fdBacking } from "./backing.js";
import type { PciFunction } from "./pci-function.js";

/**
 * Picks the sysfs file for a request: WC needs resourceN_wc; without it, UC when the request allows
 * fallback, else INVALID_ARGUMENT saying what to ask instead.
 */
export function chooseSysfsFile(
  fn: PciFunction,
  req: Pick<BackingRequest, "deviceId" | "region" | "attribute" | "allowFallback">,
): { wc: boolean; effective: Attribute; fallbackReason: string } {
  const name = req.region.name;
  if (req.attribute === "WC") {
    if (fn.hasResourceFile(req.region.index, true)) return { wc: true, effective: "WC", fallbackReason: "" };
    const why = `${fn.bdf} has no resource${req.region.index}_wc (${name} is not a prefetchable memory BAR)`;
    if (!req.allowFallback)
      throw invalid(
        `${why}, so WC is not possible; request UC, or set allow_fallback to accept UC`,
        "attribute_unsupported",
      );
    return {
      wc: false,
      effective: "UC",
      fallbackReason: `${why}; mapped UC through resource${req.region.index}`,
    };
  }
  if (req.attribute === "WB")
    throw invalid(
      `${req.deviceId} ${name}: WB is only for simulated memory; request UC or WC`,
      "attribute_unsupported",
    );
  return { wc: false, effective: "UC", fallbackReason: "" };
}

/**
 * Opens the sysfs file chosen for `req` (probed with a one-page mmap, see PciFunction.openBarFd) and
 * returns the Backing over it; `onRelease` runs once when the mapping is released.
 */
export function openSysfsBacking(fn: PciFunction, req: BackingRequest, onRelease?: () => void): Backing {
  const c = chooseSysfsFile(fn, req);
  const fd = fn.openBarFd(req.region.index, c.wc, req.prot);
  return fdBacking(
    c.wc ? "sysfs-wc" : "sysfs",
    fd,
    req.offset,
    req.length,
    c.effective,
    c.fallbackReason,
    onRelease,
  );
}
