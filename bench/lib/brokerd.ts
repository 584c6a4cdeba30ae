// One brokerd for a benchmark, as its own process on a temp runtime dir: the sim backend, the
// sim-local policy (with `limits` when given: many clients of one uid), no metrics listener, the
// audit journal to a file. Resolves once it printed "ready". VFIO_BENCH_BROKERD_NODE: node flags
// added after the deployed ones (e.g. "--max-semi-space-size=4"), to measure a change to them.
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export async function startBrokerd(
  dir: string,
  opts: { limits?: string; args?: string[]; node?: string[]; nofile?: number } = {},
): Promise<ChildProcess> {
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
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => d.toString().includes('"ready"') && resolve());
    proc.once("exit", (c) => reject(new Error(`brokerd exited ${c}`)));
  });
  return proc;
}
