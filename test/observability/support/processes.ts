// Test support: start brokerd and vfio-broker-admin as their own processes on temp dirs, wait
// for their {"event":"ready"} line, and always stop them (the caller registers stop() in an after
// hook). Also: free loopback ports and polling with a deadline (tests never assert on timing).
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/**
 * The repository root (this file runs from test/dist/observability/support/), or the checkout
 * in VFIO_BROKER_REPO (to measure another build, as test/lib/brokerd.ts does).
 */
export const REPO = process.env.VFIO_BROKER_REPO ?? fileURLToPath(new URL("../../../../", import.meta.url));

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A loopback port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  if (!addr || typeof addr === "string") throw new Error("no port");
  return addr.port;
}

/** Calls fn until it returns a value other than undefined, or throws after `ms` with `what`. */
export async function poll<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${ms} ms waiting for ${what}${last ? `; last error: ${(last as Error).message}` : ""}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface Proc {
  child: ChildProcess;
  /** The parsed ready line. */
  ready: Record<string, unknown>;
  stdout: string[];
  stderr(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves when the process is gone. Idempotent. */
  stop(): Promise<void>;
}

/** Spawns `node args...` and resolves on its first stdout line with "event":"ready". */
export async function spawnReady(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  ms = 20_000,
): Promise<Proc> {
  const child = spawn(process.execPath, args, {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    err = (err + d).slice(-20_000);
  });
  const stdout: string[] = [];
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    }
  };
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${name} not ready after ${ms} ms; stderr:\n${err}`)),
      ms,
    );
    createInterface({ input: child.stdout! }).on("line", (line) => {
      stdout.push(line);
      try {
        const j = JSON.parse(line) as Record<string, unknown>;
        if (j.event === "ready") {
          clearTimeout(timer);
          resolve(j);
        }
      } catch {
        // not JSON: keep it in stdout
      }
    });
    child.once("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? sig}) before it was ready; stderr:\n${err}`));
    });
  }).catch(async (e) => {
    await stop();
    throw e;
  });
  return { child, ready, stdout, stderr: () => err, stop };
}

export interface Brokerd extends Proc {
  dir: string;
  socket: string;
  fdSocket: string;
  adminSocket: string;
}

/** brokerd on the sim backend with deploy/policy/sim-local.yaml, sockets in `dir`. */
export async function startBrokerd(
  dir: string,
  opts: { metrics?: string; extra?: string[] } = {},
): Promise<Brokerd> {
  // brokerd refuses a policy file its group or others may write: use a copy with a known mode,
  // whatever the checkout's umask was.
  const policy = join(dir, "sim-local.yaml");
  copyFileSync(join(REPO, "deploy/policy/sim-local.yaml"), policy);
  chmodSync(policy, 0o644);
  const p = await spawnReady("brokerd", [
    join(REPO, "services/brokerd/dist/main.js"),
    "--runtime-dir",
    dir,
    "--policy",
    policy,
    "--metrics",
    opts.metrics ?? "off",
    "--journal",
    // The private dir (--runtime-dir DIR: DIR.private): never the directory workloads see.
    join(`${dir}.private`, "journal.jsonl"),
    ...(opts.extra ?? []),
  ]);
  return {
    ...p,
    dir,
    socket: String(p.ready.socket),
    fdSocket: String(p.ready.fdSocket),
    adminSocket: String(p.ready.adminSocket),
  };
}

export interface Admin extends Proc {
  url: string;
  token: string;
  tokenFile: string;
}

/** vfio-broker-admin on a free loopback port, its token file under `dir`. */
export async function startAdmin(adminSocket: string, dir: string): Promise<Admin> {
  const tokenFile = join(dir, "state", "admin-token");
  const p = await spawnReady("vfio-broker-admin", [
    join(REPO, "services/admin/dist/main.js"),
    "--admin-socket",
    adminSocket,
    "--listen",
    "127.0.0.1:0",
    "--token-file",
    tokenFile,
  ]);
  return { ...p, url: String(p.ready.url), token: readFileSync(tokenFile, "utf8").trim(), tokenFile };
}
