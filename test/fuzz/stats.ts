// stats.ts: what a fuzz run counts (outcomes per case kind or method, status codes, problems) and
// how the report prints it. Counting only; judging the counts is main.ts's job.

export class Tally {
  readonly rows = new Map<string, Map<string, number>>();

  add(row: string, col: string, n = 1): void {
    let r = this.rows.get(row);
    if (!r) {
      r = new Map();
      this.rows.set(row, r);
    }
    r.set(col, (r.get(col) ?? 0) + n);
  }

  get(row: string, col: string): number {
    return this.rows.get(row)?.get(col) ?? 0;
  }

  /** Sum of a column over every row. */
  column(col: string): number {
    let n = 0;
    for (const r of this.rows.values()) n += r.get(col) ?? 0;
    return n;
  }

  toJSON(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [k, r] of [...this.rows].sort(([a], [b]) => a.localeCompare(b)))
      out[k] = Object.fromEntries(r);
    return out;
  }

  /** "row: col=n col=n" lines, columns by count. */
  format(indent = "  "): string {
    return [...this.rows]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(
        ([k, r]) =>
          `${indent}${k}: ${[...r]
            .sort(([, a], [, b]) => b - a)
            .map(([c, n]) => `${c}=${n}`)
            .join(" ")}`,
      )
      .join("\n");
  }
}

/** Distinct problem messages with how often each occurred and the first iteration that had it. */
export class Problems {
  readonly seen = new Map<string, { count: number; first: number }>();

  add(iteration: number, message: string): void {
    // Numbers (fd numbers, lengths) would make every message distinct.
    const key = message.replace(/\d+/g, "#");
    const p = this.seen.get(key);
    if (p) p.count++;
    else this.seen.set(key, { count: 1, first: iteration });
  }

  get total(): number {
    let n = 0;
    for (const p of this.seen.values()) n += p.count;
    return n;
  }

  toJSON(): { message: string; count: number; firstIteration: number }[] {
    return [...this.seen].map(([message, p]) => ({ message, count: p.count, firstIteration: p.first }));
  }
}
