// x86 PAT memory types as the kernel books them: parsing of debugfs
// /sys/kernel/debug/x86/pat_memtype_list and the question "which memory types does the kernel
// hold for this physical range?". This is how brokerd verifies the *effective* attribute of a live
// mapping instead of trusting its own bookkeeping. Pure: takes the file's text, never reads it
// (pci-attribute.ts does).

import type { Attribute } from "./backend.js";

export const PAT_MEMTYPE_LIST = "/sys/kernel/debug/x86/pat_memtype_list";

/** The names the kernel prints (arch/x86/mm/pat/memtype.c cattr_name()). */
export type PatType =
  | "uncached"
  | "uncached-minus"
  | "write-combining"
  | "write-through"
  | "write-protect"
  | "write-back";

const PAT_TYPES: readonly string[] = [
  "uncached",
  "uncached-minus",
  "write-combining",
  "write-through",
  "write-protect",
  "write-back",
];

export interface PatEntry {
  /** First physical address. */
  start: bigint;
  /** One past the last physical address (the kernel prints the exclusive end). */
  end: bigint;
  type: PatType;
}

// "PAT: [mem 0x00000000fe800000-0x00000000fe900000] write-combining" (Linux 5.8+), and the
// older "uncached-minus @ 0xfe800000-0xfe900000".
const NEW_FORMAT = /^PAT:\s*\[mem\s+0x([0-9a-f]+)-0x([0-9a-f]+)\]\s+([a-z-]+)\s*$/i;
const OLD_FORMAT = /^([a-z-]+)\s+@\s+0x([0-9a-f]+)-0x([0-9a-f]+)\s*$/i;

/** Parses the whole file; lines it does not understand (the header) are skipped. */
export function parsePatMemtypeList(text: string): PatEntry[] {
  const out: PatEntry[] = [];
  for (const line of text.split("\n")) {
    const t = line.trim();
    let start: string | undefined;
    let end: string | undefined;
    let type: string | undefined;
    const n = NEW_FORMAT.exec(t);
    if (n) [, start, end, type] = n;
    else {
      const o = OLD_FORMAT.exec(t);
      if (o) [, type, start, end] = o;
    }
    if (start === undefined || end === undefined || type === undefined) continue;
    const ty = type.toLowerCase();
    if (!PAT_TYPES.includes(ty)) continue;
    out.push({ start: BigInt(`0x${start}`), end: BigInt(`0x${end}`), type: ty as PatType });
  }
  return out;
}

/** Entries that overlap [start, start + length). */
export function patEntriesIn(entries: PatEntry[], start: bigint, length: bigint): PatEntry[] {
  const end = start + length;
  return entries.filter((e) => e.start < end && e.end > start);
}

/** Distinct memory types booked over [start, start + length), in first-seen order. */
export function patTypesIn(entries: PatEntry[], start: bigint, length: bigint): PatType[] {
  return [...new Set(patEntriesIn(entries, start, length).map((e) => e.type))];
}

/** The broker's attribute that a PAT type realizes (UC covers both uncached flavours). */
export function attributeOfPatType(t: PatType): Attribute | undefined {
  switch (t) {
    case "uncached":
    case "uncached-minus":
      return "UC";
    case "write-combining":
      return "WC";
    case "write-back":
      return "WB";
    default:
      return undefined;
  }
}

export interface AttributeVerdict {
  /** The PAT types booked over the range (empty: nothing mapped it, or not x86, or no debugfs). */
  patTypes: PatType[];
  /** True when every booked type realizes `expected` and at least one is booked. */
  matches: boolean;
}

export function verdict(
  entries: PatEntry[],
  start: bigint,
  length: bigint,
  expected: Attribute,
): AttributeVerdict {
  const patTypes = patTypesIn(entries, start, length);
  return {
    patTypes,
    matches: patTypes.length > 0 && patTypes.every((t) => attributeOfPatType(t) === expected),
  };
}
