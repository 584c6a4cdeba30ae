// Support for the hostile-client suites: Prometheus scraping, process memory, journal parsing and
// running agents as other uids. Everything here observes brokerd from outside, as an operator would.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { REPO, run } from "../lib/brokerd.js";

export const AGENTS = join(REPO, "test/dist/hostile/agents");
/** The victim: a uid other than the attacker's (the sim policy admits any local uid). */
export const VICTIM = 1000;

export { freePort } from "../observability/support/processes.js";

/** Sums every series of `name` whose labels include `labels` (e.g. `reason="ENOSPC"`). */
export async function metric(port: number, name: string, labels = ""): Promise<number> {
  let text: string;
  try {
    text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  } catch {
    return Number.NaN; // brokerd is gone
  }
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (labels && !line.includes(labels)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** Resident set size of a process, KiB; NaN once it is gone. */
export function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return Number(m?.[1] ?? Number.NaN);
  } catch {
    return Number.NaN;
  }
}

export function sizeOf(path: string): number {
  return existsSync(path) ? statSync(path).size : 0;
}

/** The journal's lines, parsed; `torn` holds every line that is not one whole JSON object. */
export function readJournal(path: string): { lines: Record<string, unknown>[]; torn: string[] } {
  const lines: Record<string, unknown>[] = [];
  const torn: string[] = [];
  if (!existsSync(path)) return { lines, torn };
  const text = readFileSync(path, "utf8");
  const parts = text.split("\n");
  if (parts.at(-1) === "") parts.pop();
  else if (parts.length) torn.push(`(no final newline) ${parts.at(-1)!.slice(0, 80)}`);
  for (const p of parts) {
    try {
      lines.push(JSON.parse(p));
    } catch {
      torn.push(p.slice(0, 120));
    }
  }
  return { lines, torn };
}

/** Runs an agent (a compiled test/hostile/agents/*.js) as `uid` and returns its JSON summary. */
export async function agent<T>(name: string, args: string[], uid: number, timeoutMs = 120_000): Promise<T> {
  const r = await run(process.execPath, [join(AGENTS, `${name}.js`), ...args], { uid, timeoutMs });
  if (r.code !== 0) throw new Error(`agent ${name} exited ${r.code ?? r.signal}:\n${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as T;
}

export interface FloodResult {
  requests: number;
  replies: Record<string, number>;
  reconnects: number;
  errors: string[];
}

export type { VictimResult } from "./support/harness.js";

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
