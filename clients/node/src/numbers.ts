// numbers.ts: owns how the CLI reads numbers and byte strings from the command line: decimal, 0x hex
// and K/M/G suffixes (KiB, MiB, GiB: powers of 1024), and hex byte strings in memory order. Pure;
// every error says what was wrong and what would be accepted.

const UNITS: Record<string, bigint> = {
  "": 1n,
  k: 1n << 10n,
  kib: 1n << 10n,
  m: 1n << 20n,
  mib: 1n << 20n,
  g: 1n << 30n,
  gib: 1n << 30n,
};

/**
 * "4096", "0x1000", "4K", "4k", "4KiB", "1M", "0x10K", "2G" -> bigint bytes. Rejects negatives,
 * fractions, empty strings and anything past 2^64-1. `what` names the argument in the error.
 */
export function parseNumber(text: string, what = "number"): bigint {
  const s = text.trim();
  const m = /^(0x[0-9a-f]+|[0-9]+)\s*(k|kib|m|mib|g|gib)?$/i.exec(s);
  if (!m)
    throw new RangeError(
      `${what} ${JSON.stringify(text)} is not a number; use decimal (4096), hex (0x1000) or a K/M/G suffix (4K = 4096)`,
    );
  const value = BigInt(m[1]!) * UNITS[(m[2] ?? "").toLowerCase()]!;
  if (value > (1n << 64n) - 1n) throw new RangeError(`${what} ${text} does not fit in 64 bits`);
  return value;
}

/** Like parseNumber, for offsets and lengths inside one mapping: a safe JavaScript integer. */
export function parseSmallNumber(text: string, what = "number"): number {
  const v = parseNumber(text, what);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`${what} ${text} is too large`);
  return Number(v);
}

/**
 * Hex bytes in memory order: "deadbeef", "0xdeadbeef", "de:ad:be:ef", "de ad be ef", "de_ad" ->
 * Buffer [de ad be ef]. An even number of hex digits, at least one byte.
 */
export function parseHexBytes(text: string, what = "hex data"): Buffer {
  let s = text.trim();
  if (/^0x/i.test(s)) s = s.slice(2);
  s = s.replace(/[\s:_-]/g, "");
  if (s.length === 0) throw new RangeError(`${what} is empty; give hex bytes such as deadbeef`);
  if (!/^[0-9a-f]+$/i.test(s))
    throw new RangeError(
      `${what} ${JSON.stringify(text)} is not hex; give hex bytes such as deadbeef or de:ad:be:ef`,
    );
  if (s.length % 2 !== 0)
    throw new RangeError(
      `${what} ${JSON.stringify(text)} has an odd number of hex digits; give whole bytes (e.g. 0${s} or ${s}0)`,
    );
  return Buffer.from(s, "hex");
}

/** 4096n -> "4 KiB", 1048576n -> "1 MiB", 100n -> "100 B", 6144n -> "6 KiB", 4097n -> "4097 B". */
export function formatSize(n: bigint): string {
  for (const [unit, shift] of [
    ["GiB", 30n],
    ["MiB", 20n],
    ["KiB", 10n],
  ] as const) {
    const size = 1n << shift;
    if (n >= size && n % size === 0n) return `${n / size} ${unit}`;
  }
  return `${n} B`;
}

/** 0x1000 for 4096; "0x0" for 0. */
export function hex(n: bigint | number): string {
  return `0x${n.toString(16)}`;
}
