// Backing families per BAR of one vfio device: which family ("vfio": a DMABUF slice or the device
// fd; "sysfs": resourceN / resourceN_wc) backs each BAR, and how many live mappings hold it. Once
// VFIO has mmapped (or read/written) a BAR, vfio-pci claims it: the kernel refuses new sysfs mmaps
// (EINVAL) and revokes old ones (SIGBUS). So the first live mapping of a BAR fixes its family until
// all its mappings are released, and a conflicting request gets FAILED_PRECONDITION.
// Pure bookkeeping: never opens, closes or probes anything, and never lets two families hold a BAR.
import { precondition } from "../errors.js";
import { regionName } from "./regions.js";

export type BackingFamily = "vfio" | "sysfs";

/**
 * Which family backs each BAR of one device, and how many live mappings hold it. The first live
 * mapping of a BAR fixes the family; it is free again when the last one is released.
 */
export class BarFamilies {
  private readonly held = new Map<number, { family: BackingFamily; refs: number }>();

  constructor(private readonly deviceId: string) {}

  family(bar: number): BackingFamily | undefined {
    return this.held.get(bar)?.family;
  }

  refs(bar: number): number {
    return this.held.get(bar)?.refs ?? 0;
  }

  /** FAILED_PRECONDITION when `bar` is held by the other family, saying why and what to do. */
  check(
    bar: number,
    family: BackingFamily,
    what = family === "vfio" ? "a VFIO mapping" : "a sysfs mapping",
  ): void {
    const h = this.held.get(bar);
    if (!h || h.family === family) return;
    const name = regionName(bar);
    throw precondition(
      h.family === "vfio"
        ? `${this.deviceId} ${name} is mapped through VFIO by ${h.refs} live mapping(s), so ${what} is refused: ` +
            `the kernel refuses sysfs mmaps of a BAR vfio-pci has mapped and revokes older ones (SIGBUS). ` +
            `Request what VFIO can give (UC, with a policy that allows the device fd), or release the VFIO mappings of ${name} first`
        : `${this.deviceId} ${name} is mapped through sysfs by ${h.refs} live mapping(s), so ${what} is refused: ` +
            `a VFIO mmap of the BAR would make the kernel revoke those mappings (their owners would die of SIGBUS). ` +
            `Request what sysfs can give (UC, or WC on a prefetchable BAR), or release the sysfs mappings of ${name} first`,
      "backing_family_conflict",
    );
  }

  acquire(bar: number, family: BackingFamily): void {
    this.check(bar, family);
    const h = this.held.get(bar);
    if (h) h.refs++;
    else this.held.set(bar, { family, refs: 1 });
  }

  release(bar: number, family: BackingFamily): void {
    const h = this.held.get(bar);
    if (!h || h.family !== family) return;
    if (--h.refs <= 0) this.held.delete(bar);
  }
}
