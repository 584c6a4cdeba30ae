// Summaries of a V8 CPU profile (node --cpu-prof) for the benchmarks: time by function, self and
// inclusive, as shares of the profile or of its busy (not idle) time. Pure: it reads one file and
// starts nothing.
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

export interface Row {
  what: string;
  /** Share of the busy time (the profile less "(idle)"), 0..1. */
  self: number;
  inclusive: number;
}

/** "name file:line", the file relative to its package's src/dist or node_modules. */
function label(n: Node): string {
  const f = n.callFrame;
  const file = f.url.replace(/^.*\/(dist|src|node_modules)\//, "");
  return `${f.functionName || "(anonymous)"} ${file}${file ? `:${f.lineNumber + 1}` : ""}`;
}

/** Functions by self and inclusive time, largest inclusive first; busy: the busy share of the profile. */
export function summarize(file: string): { busy: number; rows: Row[] } {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const time = new Map<number, number>();
  let total = 0;
  p.samples.forEach((s, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    time.set(s, (time.get(s) ?? 0) + dt);
    total += dt;
  });
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  let idle = 0;
  for (const [id, t] of time) {
    const k = label(byId.get(id)!);
    if (k.startsWith("(idle)")) idle += t;
    self.set(k, (self.get(k) ?? 0) + t);
    const seen = new Set<string>();
    for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
      const kk = label(byId.get(x)!);
      if (seen.has(kk)) continue; // recursion counts once
      seen.add(kk);
      incl.set(kk, (incl.get(kk) ?? 0) + t);
    }
  }
  const busy = total - idle;
  const rows = [...incl]
    .filter(([k]) => !k.startsWith("(root)") && !k.startsWith("(idle)"))
    .map(([what, t]) => ({ what, inclusive: t / busy, self: (self.get(what) ?? 0) / busy }));
  return { busy: total > 0 ? busy / total : 0, rows: rows.sort((a, b) => b.inclusive - a.inclusive) };
}
