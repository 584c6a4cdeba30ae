// Drives fleet agents (agents/fleet.ts) from a test: spawn as a uid, send a command to each, await
// each one's "done" line for it. Also the restart helpers the restart suites share.
import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { AdminService, createClient, type PromiseClient } from "@vfio-broker/proto";
import { type BrokerProcess, type StartOptions, startBrokerd } from "../../lib/brokerd.js";

const AGENTS = join(dirname(fileURLToPath(import.meta.url)), "..", "agents");

export interface Fleet {
  child: ChildProcess;
  pid: number;
  /** Sends cmd and resolves with the errors its members reported. */
  run(cmd: string, timeoutMs?: number): Promise<string[]>;
  send(cmd: string): void;
  awaitDone(cmd: string, timeoutMs?: number): Promise<string[]>;
  /** Sends cmd and resolves with its whole "done" line (errors and any figures). */
  runLine(cmd: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  stats(): Promise<{ resumes: number[]; revoked: string[]; lost: string[]; mappings: number }>;
  kill(): Promise<void>;
  err(): string;
}

export async function startFleet(socket: string, n: number, firstPage: number, uid: number): Promise<Fleet> {
  const child = spawn(process.execPath, [join(AGENTS, "fleet.js"), socket, String(n), String(firstPage)], {
    uid,
    gid: uid,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const lines: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let buf = "";
  child.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      lines.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
      for (const w of waiters.splice(0)) w();
    }
  });
  child.once("exit", () => {
    for (const w of waiters.splice(0)) w();
  });
  const next = async (pred: (l: Record<string, unknown>) => boolean, what: string, timeoutMs: number) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const i = lines.findIndex(pred);
      if (i >= 0) return lines.splice(i, 1)[0]!;
      if (child.exitCode !== null || Date.now() > end)
        throw new Error(`fleet ${firstPage}: no ${what} (exit ${child.exitCode}):\n${err}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
  const ready = await next((l) => "ready" in l, "ready line", 60_000);
  if (ready.ready !== true)
    throw new Error(`fleet ${firstPage} failed to start: ${String(ready.error)}\n${err}`);
  const send = (cmd: string) => child.stdin!.write(`${cmd}\n`);
  const awaitDone = async (cmd: string, timeoutMs = 90_000) =>
    (await next((l) => l.done === cmd, `done ${cmd}`, timeoutMs)).errors as string[];
  return {
    child,
    pid: child.pid!,
    send,
    awaitDone,
    runLine: (cmd, timeoutMs = 90_000) => {
      send(cmd);
      return next((l) => l.done === cmd, `done ${cmd}`, timeoutMs);
    },
    run: (cmd, timeoutMs) => {
      send(cmd);
      return awaitDone(cmd, timeoutMs);
    },
    stats: async () => {
      send("stats");
      return (await next((l) => l.stats === true, "stats", 30_000)) as never;
    },
    kill: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    },
    err: () => err,
  };
}

export function admin(b: BrokerProcess): PromiseClient<typeof AdminService> {
  return createClient(AdminService, `unix:${b.adminSocket}`);
}

/** kill -9, then a new brokerd on the same runtime (and state) directory. */
export async function killAndRestart(b: BrokerProcess, opts: StartOptions = {}): Promise<BrokerProcess> {
  const exited = new Promise((r) => (b.proc.exitCode !== null ? r(null) : b.proc.once("exit", r)));
  b.proc.kill("SIGKILL");
  await exited;
  return startBrokerd({ ...opts, dir: b.dir });
}

/** One line of figures for the log (and BENCHMARKS.md). */
export function report(test: string, figures: Record<string, unknown>): void {
  console.log(`restart: ${JSON.stringify({ test, ...figures })}`);
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/**
 * The client names of the sessions fleets of `perFleet` members holding pages [0, clients) have
 * once each has run "verify": one per member, plus one gRPC side session for each member on the
 * workload protocol (the even ones, agents/fleet.ts), which its ReadRegion opened
 * (clients/node/src/side-session.ts). Sorted.
 */
export function fleetSessionNames(clients: number, perFleet: number): string[] {
  const want: string[] = [];
  for (let page = 0; page < clients; page++) {
    want.push(`fleet-${page}`);
    if ((page % perFleet) % 2 === 0) want.push(`fleet-${page} (grpc)`);
  }
  return want.sort();
}
