// The kernel probe of mode "sysfs-wc" (the sysfs backend), and what that backend changes on a
// function to serve it: what each BAR can be given on the running kernel, found by trying it once
// (a one-page mmap of resourceN and of resourceN_wc, as PciFunction.openBarFd probes), and keeping
// an unopened function decoding its BARs (vfio-pci and pci-stub never enable a function nobody
// opened, and vfio-pci lets an idle one drop to D3hot).
// Never keeps an fd it opened to probe, never opens anything under /dev/vfio, and never offers an
// attribute its probe did not map.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { closeFd, PAGE_SIZE } from "@vfio-broker/native";
import type { Attribute, RegionInfo } from "./backend.js";
import type { PciFunction } from "./pci-function.js";
import { CONFIG_REGION_INDEX } from "./regions.js";
import type { Log } from "./sysfs.js";

/** What handsOffFunction changed, for undoHandsOff. */
export interface FunctionUndo {
  /** brokerd enabled the unbound function (sysfs enable = 1): disabled again on detach. */
  enabled: boolean;
  /** The runtime-PM control brokerd replaced ("auto"), restored on detach; "" when untouched. */
  powerControl: string;
  /** The PCI COMMAND register before brokerd turned memory decode on (-1: untouched). */
  command: number;
}

const PCI_COMMAND = 4n;
const PCI_COMMAND_MEMORY = 0x2;

function readCommand(fn: PciFunction): number {
  const b = Buffer.alloc(2);
  fn.access(CONFIG_REGION_INDEX, PCI_COMMAND, b, false);
  return b.readUInt16LE(0);
}

function writeCommand(fn: PciFunction, v: number): void {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v, 0);
  fn.access(CONFIG_REGION_INDEX, PCI_COMMAND, b, true);
}

/**
 * Makes an unopened function decode its BARs. Unbound, it is enabled (sysfs enable = 1 runs
 * pci_enable_device(), as a driver's probe would). Bound to vfio-pci or pci-stub, sysfs `enable`
 * is refused (EBUSY: it has a driver), and neither driver enables a function nobody opened: brokerd
 * turns on memory decode in the COMMAND register if it is off; and on vfio-pci it keeps the
 * function at D0 (power/control = on: vfio-pci runtime-suspends an idle function to D3hot, where
 * its BARs read as all ones). uio_pci_generic enables it itself.
 */
export function handsOffFunction(fn: PciFunction, driver: string, log: Log): FunctionUndo {
  const undo: FunctionUndo = { enabled: false, powerControl: "", command: -1 };
  if (driver === "") {
    undo.enabled = fn.ensureEnabled();
    if (undo.enabled)
      log(`sysfs: ${fn.bdf}: enabled the function (sysfs enable = 1) so that its BARs decode`);
    return undo;
  }
  const control = join(fn.dir, "power", "control");
  if (driver === "vfio-pci" && existsSync(control) && readFileSync(control, "utf8").trim() === "auto") {
    writeFileSync(control, "on");
    undo.powerControl = "auto";
    log(`sysfs: ${fn.bdf}: kept at D0 (power/control = on): vfio-pci suspends a function nobody opened`);
  }
  if ((driver === "vfio-pci" || driver === "pci-stub") && fn.configSize > 0n) {
    const cmd = readCommand(fn);
    if ((cmd & PCI_COMMAND_MEMORY) === 0) {
      writeCommand(fn, cmd | PCI_COMMAND_MEMORY);
      undo.command = cmd;
      log(
        `sysfs: ${fn.bdf}: turned memory decode on (COMMAND 0x${cmd.toString(16)}): ${driver} leaves it off`,
      );
    }
  }
  return undo;
}

/** Undoes handsOffFunction (the function is still present). */
export function undoHandsOff(fn: PciFunction, undo: FunctionUndo): void {
  if (undo.command >= 0)
    writeCommand(fn, (readCommand(fn) & ~PCI_COMMAND_MEMORY) | (undo.command & PCI_COMMAND_MEMORY));
  if (undo.enabled) fn.disable();
  if (undo.powerControl !== "") writeFileSync(join(fn.dir, "power", "control"), undo.powerControl);
  fn.close();
}

/** One mmap probe of resourceN(_wc); "" when it mapped, else why not. */
function probeMap(fn: PciFunction, bar: number, wc: boolean): string {
  try {
    closeFd(fn.openBarFd(bar, wc, "r"));
    return "";
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * The regions with the attributes this kernel gives a sysfs mapping of each now, and notes on what
 * it refused. A BAR whose resourceN_wc maps keeps WC; one whose resourceN does not keeps no UC.
 */
export function probeSysfsRegions(
  fn: PciFunction,
  regions: RegionInfo[],
): { regions: RegionInfo[]; notes: string[] } {
  const notes: string[] = [];
  const out = regions.map((r) => {
    if (!r.mappable) return r;
    const attributes: Attribute[] = [];
    for (const a of r.attributes) {
      const refused = probeMap(fn, r.index, a === "WC");
      if (refused === "") attributes.push(a);
      else if (r.size < BigInt(PAGE_SIZE))
        notes.push(
          `${r.name} (${r.size} B, smaller than a page): the kernel refuses to mmap it, so no ${a}; ReadRegion/WriteRegion reach it`,
        );
      else notes.push(`${r.name}: no ${a} in mode sysfs-wc here: ${refused}`);
    }
    return attributes.length === r.attributes.length ? r : { ...r, attributes };
  });
  return { regions: out, notes };
}
