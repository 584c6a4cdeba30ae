// Running bench/workload's C programs (built under bench/workload/build by its Makefile) from the
// benchmarks: as an unprivileged uid when the benchmark runs as root, started until they say they
// are ready, and the 64-session throughput run. It owns how a driver is run, not what is measured.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { REPO } from "../lib/brokerd.js";

export const W = join(REPO, "bench/workload");
export const B = join(W, "build");

// The C clients and the floor server run as an unprivileged uid (nobody) when the bench runs as
// root, as a workload would: brokerd (root) hands them fds across the privilege boundary.
export const AS: { uid?: number; gid?: number } = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
export const AS_WHO = process.getuid?.() === 0 ? "uid 65534" : `uid ${process.getuid?.()}`;

/** `driver tput`'s result line. */
export interface Tput {
  client: string;
  sessions: number;
  seconds: number;
  grants: number;
  perS: number;
  p50: number;
  p99: number;
  serverCpuS: number;
  clientCpuS: number;
}

/** Runs a driver to completion; its last stdout line, parsed. */
export function run<T>(bin: string, args: string[], input = ""): T {
  const out = execFileSync(join(B, bin), args, {
    ...AS,
    input,
    encoding: "utf8",
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split("\n").pop()!) as T;
}

/** A driver started and waited for until it printed a line starting with `ready`. */
export async function started(bin: string, args: string[]): Promise<{ proc: ChildProcess; line: string }> {
  const proc = spawn(join(B, bin), args, { ...AS, stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  const line = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const l = out.split("\n").find((x) => x.startsWith("ready"));
      if (l) resolve(l);
    });
    proc.once("exit", (c) => reject(new Error(`${bin} ${args[0]} exited ${c} before it was ready`)));
  });
  return { proc, line };
}

export function finished(proc: ChildProcess): Promise<string> {
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  return new Promise((resolve, reject) =>
    proc.once("exit", (c) => (c === 0 ? resolve(out) : reject(new Error(`driver exited ${c}`)))),
  );
}

/**
 * procs x threads sessions granting for `seconds` after a common start; pid: the server whose CPU
 * is read. onGo: called just before the start (what the caller measures from then on).
 */
export async function tput(
  bin: string,
  socket: string,
  pid: number,
  seconds: number,
  procs = 16,
  threads = 4,
  onGo?: () => void,
): Promise<Tput> {
  const { proc } = await started(bin, [
    "tput",
    socket,
    String(procs),
    String(threads),
    String(seconds),
    String(pid),
  ]);
  const done = finished(proc);
  onGo?.();
  proc.stdin!.end("go\n");
  return JSON.parse((await done).trim().split("\n").pop()!) as Tput;
}
