// Test support: the live objects of this process, counted by kind from a heap snapshot (which
// collects garbage first), for tests that say what an idle session or connection holds (counts,
// never timings). Test code only: never imported by brokerd.
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeHeapSnapshot } from "node:v8";

/** Live objects by "type:name" ("object:Promise", "closure:onExit", ...), written under dir. */
export function liveObjects(dir: string, tag: string): Map<string, number> {
  const file = writeHeapSnapshot(join(dir, `${tag}.heapsnapshot`));
  const s = JSON.parse(readFileSync(file, "utf8")) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  rmSync(file);
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const [ti, ni] = [fields.indexOf("type"), fields.indexOf("name")];
  const out = new Map<string, number>();
  for (let i = 0; i < s.nodes.length; i += fields.length) {
    const k = `${types[s.nodes[i + ti]!]}:${s.strings[s.nodes[i + ni]!]}`;
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

/** Per item of n, how many more objects of kind `k` (or of every kind starting with `k*`) after has. */
export function perItem(before: Map<string, number>, after: Map<string, number>, n: number) {
  return (k: string): number => {
    const sum = (m: Map<string, number>) =>
      k.endsWith("*")
        ? [...m].reduce((t, [key, c]) => (key.startsWith(k.slice(0, -1)) ? t + c : t), 0)
        : (m.get(k) ?? 0);
    return (sum(after) - sum(before)) / n;
  };
}
