// Heap snapshots of a brokerd for the benchmarks: asking for one (SIGUSR2 with
// --heapsnapshot-signal; brokerd collects garbage first) and counting its live objects by kind.
// It owns reading snapshot files; it starts no process.
import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
  nodes: number[];
  strings: string[];
}

export type Kinds = Map<string, { bytes: number; count: number }>;

/** Bytes and counts of live objects by kind ("object:Mapping", "string", "closure:release", ...). */
export function byKind(file: string): Kinds {
  const s = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const [ti, ni, si] = ["type", "name", "self_size"].map((f) => fields.indexOf(f)) as [
    number,
    number,
    number,
  ];
  const out: Kinds = new Map();
  for (let i = 0; i < s.nodes.length; i += fields.length) {
    const t = types[s.nodes[i + ti]!]!;
    const k = ["object", "closure", "native"].includes(t) ? `${t}:${s.strings[s.nodes[i + ni]!]}` : t;
    const e = out.get(k) ?? { bytes: 0, count: 0 };
    e.bytes += s.nodes[i + si]!;
    e.count++;
    out.set(k, e);
  }
  return out;
}

/**
 * Asks brokerd (started with --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=dir) for a heap
 * snapshot and waits until the file in dir is complete.
 */
export async function snapshot(brokerd: ChildProcess, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  brokerd.kill("SIGUSR2");
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    const file = readdirSync(dir).find((f) => !before.has(f));
    if (!file) continue;
    try {
      JSON.parse(readFileSync(join(dir, file), "utf8"));
      return join(dir, file);
    } catch {
      // still being written
    }
  }
}

/** Per-item difference of two snapshots' kinds, largest first: [kind, bytes, objects]. */
export function perItem(base: Kinds, full: Kinds, n: number): { k: string; bytes: number; count: number }[] {
  return [...full]
    .map(([k, e]) => {
      const b = base.get(k) ?? { bytes: 0, count: 0 };
      return { k, bytes: (e.bytes - b.bytes) / n, count: (e.count - b.count) / n };
    })
    .sort((a, b) => b.bytes - a.bytes);
}
