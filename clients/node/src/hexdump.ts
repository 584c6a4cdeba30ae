// hexdump.ts: owns the CLI's hexdump format, one line per 16 bytes:
//   0x00000010  de ad be ef 00 00 00 00  00 00 00 00 00 00 00 00  |................|
// The address is `base` plus the line's offset, at least 8 hex digits. Pure.

const PER_LINE = 16;

function printable(b: number): string {
  return b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".";
}

/** One line for up to 16 bytes of `data` starting at address `address`. */
export function hexdumpLine(data: Uint8Array, address: number | bigint): string {
  const cells: string[] = [];
  for (let i = 0; i < PER_LINE; i++) {
    const b = data[i];
    cells.push(i < data.length && b !== undefined ? b.toString(16).padStart(2, "0") : "  ");
  }
  const left = cells.slice(0, 8).join(" ");
  const right = cells.slice(8).join(" ");
  const ascii = Array.from(data.subarray(0, PER_LINE), printable).join("");
  const addr = `0x${address.toString(16).padStart(8, "0")}`;
  return `${addr}  ${left}  ${right}  |${ascii}|`;
}

/** The whole of `data` as lines, addresses starting at `base`. Empty data gives no lines. */
export function hexdump(data: Uint8Array, base: number | bigint = 0): string[] {
  const lines: string[] = [];
  for (let off = 0; off < data.length; off += PER_LINE) {
    const addr = typeof base === "bigint" ? base + BigInt(off) : base + off;
    lines.push(hexdumpLine(data.subarray(off, off + PER_LINE), addr));
  }
  return lines;
}
