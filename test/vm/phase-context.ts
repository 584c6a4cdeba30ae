// VM suite, guest side: what guest.ts hands to a phase kept in a file of its own (the unmodified
// programs of issue 21: libpciaccess, DPDK). Types only: guest.ts owns the check counter, the log and
// brokerd's start; a phase must never count or print results any other way.
import type { PciFunction } from "@vfio-broker/brokerd/devices/pci-function";
import type { Brokerd } from "./guest.js";

export interface PhaseContext {
  /** Counts and prints one "VMTEST-CHECK PASS|FAIL name" line. */
  check(name: string, ok: boolean, detail?: string): boolean;
  log(m: string): void;
  startBrokerd(tag: string, args: string[], policy: string): Promise<Brokerd | undefined>;
  /** The ivshmem-plain function (BAR2 = the host's shared-memory file). */
  fn: PciFunction;
  /** The policy file: uid 65534 may map the ivshmem device UC or WC, read-write. */
  policy: string;
  /** The checkout, as the guest sees it. */
  repo: string;
}
