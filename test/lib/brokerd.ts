// Test harness: starts brokerd as its own process on temp sockets, the way an operator would,
// and stops it (always) at the end. Tests talk to it only as clients do: through its sockets.
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (tests run from test/dist/...). */
export const REPO =
  process.env.VFIO_BROKER_REPO ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export const BROKERD = join(REPO, "services/brokerd/dist/main.js");
export const CLI = join(REPO, "clients/node/dist/cli.js");
export const SIM_POLICY = join(REPO, "deploy/policy/sim-local.yaml");

export interface BrokerProcess {
  /** The workload directory: broker.sock and fd.sock, nothing else (what containers mount). */
  dir: string;
  /** brokerd's private directory (DIR.private): admin.sock, handover.sock, the lock, the policy copy, the journal. */
  privateDir: string;
  /** The state store (PRIVATE-DIR/state). */
  stateDir: string;
  socket: string;
  fdSocket: string;
  adminSocket: string;
  policyPath: string;
  journal: string;
  proc: ChildProcess;
  pid: number;
  /** brokerd's stderr so far (for failure messages). */
  stderr(): string;
  /** Number of open fds of the brokerd process. */
  fdCount(): number;
  stop(): Promise<void>;
}

export interface StartOptions {
  policy?: string;
  policyText?: string;
  args?: string[];
  /** Workload dir to reuse (e.g. to restart brokerd where a killed one left its sockets and state). */
  dir?: string;
  /** A command that execs brokerd's command line (setpriv, prlimit ...): its pid stays brokerd's. */
  wrap?: string[];
}

/** brokerd's private directory for workload directory `dir` (what --runtime-dir DIR gives). */
export function privateDirOf(dir: string): string {
  return `${dir}.private`;
}

/** A temp dir uid 65534 can traverse (sockets inside are 0666). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

/**
 * brokerd's command line as the tests run it: temp sockets (workload dir `dir`, private dir
 * DIR.private, through --runtime-dir), no metrics listener, a journal file.
 */
export function brokerdArgs(
  dir: string,
  policyPath: string,
  journal: string,
  extra: string[] = [],
): string[] {
  return [
    BROKERD,
    "--runtime-dir",
    dir,
    "--policy",
    policyPath,
    "--metrics",
    "off",
    "--journal",
    journal,
    ...extra,
  ];
}

export async function startBrokerd(opts: StartOptions = {}): Promise<BrokerProcess> {
  const dir = opts.dir ?? tempDir("vfio-broker-e2e-");
  const privateDir = privateDirOf(dir);
  mkdirSync(privateDir, { mode: 0o700, recursive: true });
  // brokerd refuses a policy file its group or others may write; a copy with a known mode keeps
  // the tests independent of the checkout's umask. It and the journal are brokerd's own: in the
  // private dir, not in the directory workloads see.
  const policyPath = join(privateDir, "policy.yaml");
  writeFileSync(policyPath, opts.policyText ?? readFileSync(opts.policy ?? SIM_POLICY));
  chmodSync(policyPath, 0o644);
  const journal = join(privateDir, "journal.jsonl");
  const argv = [process.execPath, ...brokerdArgs(dir, policyPath, journal, opts.args)];
  const cmd = [...(opts.wrap ?? []), ...argv];
  const proc = spawn(cmd[0]!, cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (b: Buffer) => {
    err += b.toString();
  });
  await new Promise<void>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(
      () => reject(new Error(`brokerd did not become ready in 20 s:\n${err}`)),
      20_000,
    );
    proc.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      if (out.includes('"event":"ready"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`brokerd exited with ${code} before it was ready:\n${err}`));
    });
  });
  return {
    dir,
    privateDir,
    stateDir: join(privateDir, "state"),
    socket: join(dir, "broker.sock"),
    fdSocket: join(dir, "fd.sock"),
    adminSocket: join(privateDir, "admin.sock"),
    policyPath,
    journal,
    proc,
    pid: proc.pid!,
    stderr: () => err,
    fdCount: () => readdirSync(`/proc/${proc.pid}/fd`).length,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
      rmSync(privateDir, { recursive: true, force: true });
    },
  };
}

/** Polls fn until it returns a truthy value or the deadline passes (no timing assertions). */
export async function until<T>(
  what: string,
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  everyMs = 25,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command (optionally as another uid) to completion. */
export function run(
  cmd: string,
  args: string[],
  opts: { uid?: number; gid?: number; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, ...opts.env },
      ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid ?? opts.uid } : {}),
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    const t = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
    // A child that exits (or closes stdin) before reading it must not fail the caller with EPIPE.
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

export const NOBODY = 65534;
