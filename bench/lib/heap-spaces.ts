// brokerd's V8 heap by space, read from its own Prometheus /metrics (prom-client's default
// metrics: nodejs_heap_space_size_{total,used}_bytes{space}, nodejs_external_memory_bytes), for
// the benchmarks that explain an RSS delta. It owns scraping and parsing that text; it starts no
// process and changes nothing in brokerd (a scrape is what Prometheus does every 15-60 s).
import { createServer } from "node:net";

/** Bytes by series: "total:new", "used:old", ..., "external". */
export type HeapSpaces = Map<string, number>;

/** A loopback TCP port nobody listens on now (brokerd's --metrics takes it a moment later). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (a && typeof a === "object" ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

export async function heapSpaces(port: number): Promise<HeapSpaces> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: HeapSpaces = new Map();
  for (const line of text.split("\n")) {
    const m = /^nodejs_heap_space_size_(total|used)_bytes\{space="([a-z_]+)"\} (\d+)/.exec(line);
    if (m) out.set(`${m[1]}:${m[2]}`, Number(m[3]));
    const e = /^nodejs_external_memory_bytes (\d+)/.exec(line);
    if (e) out.set("external", Number(e[1]));
  }
  return out;
}

/**
 * Per item (after - before) / n for each space's committed size (and its used bytes), external
 * memory, and what the RSS delta has beyond them (native memory, stacks; negative when V8 committed
 * pages it has not touched yet). Spaces that moved by under 1 B per item are left out.
 */
export function heapDelta(
  before: HeapSpaces,
  after: HeapSpaces,
  rssDeltaB: number,
  n: number,
): { what: string; committed: number; used: number }[] {
  const spaces = [...after.keys()].filter((k) => k.startsWith("total:")).map((k) => k.slice(6));
  const d = (k: string) => ((after.get(k) ?? 0) - (before.get(k) ?? 0)) / n;
  const rows = spaces
    .map((s) => ({ what: `${s} space`, committed: d(`total:${s}`), used: d(`used:${s}`) }))
    .filter((r) => Math.abs(r.committed) >= 1 || Math.abs(r.used) >= 1);
  const ext = d("external");
  const heap = spaces.reduce((t, s) => t + d(`total:${s}`), 0);
  rows.push({ what: "external (ArrayBuffers)", committed: ext, used: ext });
  rows.push({
    what: "RSS beyond V8's heap and external",
    committed: rssDeltaB / n - heap - ext,
    used: Number.NaN,
  });
  return rows;
}
