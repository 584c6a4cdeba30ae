// PCI addresses and sysfs `resource` files as text: normalizing a BDF ("00:01.0" ->
// "0000:00:01.0") and parsing the per-resource lines (start, end, IORESOURCE_* flags) into BARs.
// Pure: takes strings, never reads a file (pci-function.ts does) and never decides what is offered.
import { invalid } from "../errors.js";

// include/linux/ioport.h
export const IORESOURCE_IO = 0x100;
export const IORESOURCE_MEM = 0x200;
export const IORESOURCE_PREFETCH = 0x2000;
export const IORESOURCE_READONLY = 0x4000;
export const IORESOURCE_MEM_64 = 0x100000;
export const IORESOURCE_UNSET = 0x20000000;
export const IORESOURCE_DISABLED = 0x10000000;

/** One line of a sysfs `resource` file: "0x<start> 0x<end> 0x<flags>" (end inclusive). */
export interface PciResource {
  index: number;
  start: bigint;
  end: bigint;
  flags: number;
  /** end - start + 1, or 0 for an unused resource (all zeros). */
  size: bigint;
  io: boolean;
  mem: boolean;
  prefetchable: boolean;
  mem64: boolean;
}

/** Parses a sysfs `resource` file. Line i is resource i: 0-5 BARs, 6 ROM, then bridge/IOV windows. */
export function parseResourceFile(text: string): PciResource[] {
  const out: PciResource[] = [];
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  lines.forEach((line, index) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 3 || !parts.every((p) => /^0x[0-9a-f]+$/i.test(p)))
      throw new Error(`resource line ${index} "${line.trim()}" is not "0x<start> 0x<end> 0x<flags>"`);
    const [start, end, flagsBig] = parts.map((p) => BigInt(p)) as [bigint, bigint, bigint];
    const flags = Number(flagsBig & 0xffffffffn);
    const used = !(start === 0n && end === 0n) && end >= start;
    out.push({
      index,
      start,
      end,
      flags,
      size: used ? end - start + 1n : 0n,
      io: (flags & IORESOURCE_IO) !== 0,
      mem: (flags & IORESOURCE_MEM) !== 0,
      prefetchable: (flags & IORESOURCE_PREFETCH) !== 0,
      mem64: (flags & IORESOURCE_MEM_64) !== 0,
    });
  });
  return out;
}

const BDF = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;

/** "00:01.0" -> "0000:00:01.0"; lowercases; throws INVALID_ARGUMENT for anything else. */
export function normalizeBdf(text: string): string {
  let t = text.trim().toLowerCase();
  if (/^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(t)) t = `0000:${t}`;
  if (!BDF.test(t))
    throw invalid(
      `"${text}" is not a PCI address; write domain:bus:device.function like 0000:3b:00.1 (lspci -D)`,
    );
  return t;
}
