// One brokerd for a benchmark, as its own process on a temp runtime dir: the sim backend, the
// sim-local policy (with `limits` when given: many clients of one uid), no metrics listener, the
// audit journal to a file. Resolves once it printed its ready line. VFIO_BENCH_BROKERD_NODE: node flags
// added after the deployed ones (e.g. "--max-semi-space-size=4"), to measure a change to them.
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export interface BrokerdOptions {
  limits?: string;
  args?: string[];
  node?: string[];
  nofile?: number;
  /** "pipe": brokerd's stderr is kept for the caller (Started.stderr) instead of shown. */
  stderr?: "inherit" | "pipe";
}

export interface Started {
  proc: ChildProcess;
  /** brokerd's ready line (JSON: its caps among the rest). */
  ready: string;
  /** What brokerd wrote to stderr so far ("" unless stderr: "pipe"). */
  stderr(): string;
}

export async function startBrokerd(dir: string, opts: BrokerdOptions = {}): Promise<ChildProcess> {
  return (await startBrokerdReady(dir, opts)).proc;
}

/** startBrokerd, resolving with the ready line and the stderr brokerd wrote too. */
export async function startBrokerdReady(dir: string, opts: BrokerdOptions = {}): Promise<Started> {
  // brokerd refuses a policy file others may write: a copy with a known mode.
  const policy = join(dir, "policy.yaml");
  const text = readFileSync(join(REPO, "deploy/policy/sim-local.yaml"), "utf8");
  writeFileSync(
    policy,
    opts.limits
      ? text.replace("allowDeviceFd: false", `allowDeviceFd: false\n    limits: ${opts.limits}`)
      : text,
  );
  chmodSync(policy, 0o644);
  // nofile: brokerd's RLIMIT_NOFILE, soft and hard (util-linux prlimit), instead of this process's.
  const argv0 = opts.nofile ? "prlimit" : process.execPath;
  const pre = opts.nofile ? [`--nofile=${opts.nofile}:${opts.nofile}`, "--", process.execPath] : [];
  const proc = spawn(
    argv0,
    [
      ...pre,
      // As the systemd unit and the image run it (deploy/): V8's semi-spaces capped at 2 MiB.
      "--max-semi-space-size=2",
      ...(process.env.VFIO_BENCH_BROKERD_NODE?.split(" ").filter(Boolean) ?? []),
      ...(opts.node ?? []),
      join(REPO, "services/brokerd/dist/main.js"),
      "--runtime-dir",
      dir,
      "--policy",
      policy,
      "--metrics",
      "off",
      "--journal",
      // The private dir (--runtime-dir DIR: DIR.private): never the directory workloads see.
      join(`${dir}.private`, "journal.jsonl"),
      ...(opts.args ?? []),
    ],
    { stdio: ["ignore", "pipe", opts.stderr ?? "inherit"] },
  );
  let err = "";
  proc.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  let out = "";
  const ready = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const whole = out.split("\n").slice(0, -1); // the last piece is a line still being written
      const line = whole.find((l) => l.includes('"ready"'));
      if (line !== undefined) resolve(line);
    });
    proc.once("exit", (c) =>
      reject(new Error(`brokerd exited ${c}${err ? `: ${err.trim().slice(-400)}` : ""}`)),
    );
  });
  return { proc, ready, stderr: () => err };
}
