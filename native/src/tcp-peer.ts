// tcp-peer.ts: owns finding who is at the other end of a loopback TCP connection from the text
// of /proc/net/tcp and /proc/net/tcp6: the peer's socket is the line whose local address is our
// connection's remote one (and the other way round), and its uid column is the uid that created
// that socket. It is the fallback of tcp-owner.ts (the kernel's exact lookup) where the kernel has
// no inet_diag, and holds the address spellings both share. Pure parsing and lookup: the caller
// reads the files (tcp-peer-guard.ts). It never guesses: a peer socket that is missing, or no
// longer ESTABLISHED (an orphan shows uid 0), is "unknown", never some uid. Only meaningful for
// peers in the reader's own network namespace, which is every peer a loopback listener can have.

/** The state column of an ESTABLISHED socket (include/net/tcp_states.h). */
const TCP_ESTABLISHED = 1;

export interface TcpConnection {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

/** A table of the sockets in /proc/net/tcp{,6}: "<addr>:<port>><addr>:<port>" -> uid, established only. */
export type TcpTable = Map<string, number>;

function v4Bytes(text: string): number[] | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  const b = m?.slice(1).map(Number);
  return b?.every((n) => n <= 255) ? b : undefined;
}

/** A textual address (as Node reports it) as 16 bytes, IPv4 as ::ffff:a.b.c.d; undefined if not an address. */
export function addressBytes(text: string): Uint8Array | undefined {
  let addr = text.replace(/%.*$/, ""); // a zone index (fe80::1%lo) names no other host
  const b = new Uint8Array(16);
  const v4 = v4Bytes(addr);
  if (v4) {
    b.set([0xff, 0xff, ...v4], 10);
    return b;
  }
  // A trailing dotted IPv4 (::ffff:127.0.0.1) is two more groups.
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(addr);
  if (dotted) {
    const t = v4Bytes(dotted[2]!);
    if (!t) return undefined;
    addr = `${dotted[1]}${((t[0]! << 8) | t[1]!).toString(16)}:${((t[2]! << 8) | t[3]!).toString(16)}`;
  }
  const halves = addr.split("::");
  if (halves.length > 2) return undefined;
  const left = halves[0] ? halves[0].split(":") : [];
  const right = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const zeros = 8 - left.length - right.length;
  if (halves.length === 1 ? zeros !== 0 : zeros < 1) return undefined;
  const groups = [...left, ...new Array<string>(halves.length === 2 ? zeros : 0).fill("0"), ...right];
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(groups[i]!)) return undefined;
    const w = Number.parseInt(groups[i]!, 16);
    b[2 * i] = w >> 8;
    b[2 * i + 1] = w & 0xff;
  }
  return b;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

/**
 * An address column of /proc/net/tcp (8 hex digits) or tcp6 (32), as the kernel prints it:
 * each 32-bit word of the network-order address read as a host-order integer.
 */
export function procAddressBytes(field: string, littleEndian = true): Uint8Array | undefined {
  if (!/^(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32})$/.test(field)) return undefined;
  const raw = Buffer.from(field, "hex");
  if (littleEndian) for (let w = 0; w < raw.length; w += 4) raw.subarray(w, w + 4).reverse();
  if (raw.length === 16) return new Uint8Array(raw);
  const b = new Uint8Array(16);
  b[10] = 0xff;
  b[11] = 0xff;
  b.set(raw, 12);
  return b;
}

function endpointKey(addr: Uint8Array, port: number): string {
  return `${hex(addr)}:${port}`;
}

function parseLine(line: string, littleEndian: boolean, into: TcpTable): void {
  // sl local rem st tx:rx tr:when retrnsmt uid ...
  const f = line.trim().split(/\s+/);
  if (f.length < 8 || !f[0]!.endsWith(":")) return;
  const [la, lp] = f[1]!.split(":");
  const [ra, rp] = f[2]!.split(":");
  const state = Number.parseInt(f[3]!, 16);
  const uid = Number(f[7]);
  if (state !== TCP_ESTABLISHED || !/^\d+$/.test(f[7]!) || !Number.isSafeInteger(uid)) return;
  const l = procAddressBytes(la ?? "", littleEndian);
  const r = procAddressBytes(ra ?? "", littleEndian);
  if (!l || !r || !/^[0-9A-Fa-f]{4}$/.test(lp ?? "") || !/^[0-9A-Fa-f]{4}$/.test(rp ?? "")) return;
  into.set(`${endpointKey(l, Number.parseInt(lp!, 16))}>${endpointKey(r, Number.parseInt(rp!, 16))}`, uid);
}

/**
 * Parses /proc/net/tcp or /proc/net/tcp6 text into the ESTABLISHED sockets' owners. Lines that
 * do not parse are skipped (the header, a truncated last line). With remotePort (our listener's
 * port), only the sockets connected to it are parsed: found by searching for ":PORT 01 " (the
 * remote port and the ESTABLISHED state, a string no other column can hold), so a table of
 * 100,000 sockets costs one scan, not 100,000 splits.
 */
export function parseProcNetTcp(
  text: string,
  littleEndian = true,
  into: TcpTable = new Map(),
  remotePort?: number,
): TcpTable {
  if (remotePort === undefined) {
    for (const line of text.split("\n")) parseLine(line, littleEndian, into);
    return into;
  }
  const needle = `:${remotePort.toString(16).toUpperCase().padStart(4, "0")} 01 `;
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + needle.length)) {
    const start = text.lastIndexOf("\n", at) + 1;
    const end = text.indexOf("\n", at);
    const line = text.slice(start, end < 0 ? text.length : end);
    // The needle must be the rem_address column's end: the third field.
    const f = line.trim().split(/\s+/, 4);
    if (f[2]?.endsWith(needle.slice(0, 5))) parseLine(line, littleEndian, into);
  }
  return into;
}

/** The uid that owns the peer's end of conn (seen from our end), or undefined if the table lacks it. */
export function peerUid(table: TcpTable, conn: TcpConnection): number | undefined {
  const local = addressBytes(conn.localAddress);
  const remote = addressBytes(conn.remoteAddress);
  if (!local || !remote) return undefined;
  return table.get(`${endpointKey(remote, conn.remotePort)}>${endpointKey(local, conn.localPort)}`);
}
