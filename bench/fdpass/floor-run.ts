// Builds floor.c (cc -O2, into a temp dir) and runs it: the C floors the fdpass and grant
// benchmarks print their ratios against, measured in the same run.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export interface FloorResult {
  n: number;
  seconds: number;
  /** Per-iteration p50 and p99, µs (grant modes only; NaN otherwise). */
  p50: number;
  p99: number;
}

export function runFloor(n: number, mode: "fdpass" | "grant" | "grant-batched"): FloorResult {
  const dir = mkdtempSync(join(tmpdir(), "bench-floor-"));
  try {
    const source = fileURLToPath(new URL("../../fdpass/floor.c", import.meta.url));
    const binary = join(dir, "floor");
    execFileSync("cc", ["-O2", "-Wall", "-Wextra", "-o", binary, source], { stdio: "inherit" });
    const out = execFileSync(binary, mode === "fdpass" ? [String(n)] : [String(n), mode], {
      encoding: "utf8",
    })
      .trim()
      .split(" ")
      .map(Number);
    return { n: out[0]!, seconds: out[1]!, p50: out[2] ?? Number.NaN, p99: out[3] ?? Number.NaN };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
