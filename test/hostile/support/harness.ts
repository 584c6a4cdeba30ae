// What every hostile test shares: the victim (an honest client of another uid that keeps granting
// during the attack), brokerd's resource figures (fds against its limit, RSS), attacker agents run
// as uid 65534, and one line of measured figures per test ("hostile: {...}") so the numbers in
// docs/security.md come from a run anyone can repeat.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { type BrokerProcess, type StartOptions, startBrokerd } from "../../lib/brokerd.js";

export const ATTACKER = 65534;
/** The victim's uid: not the attacker's, not root (the sim policy lets any local uid in). */
export const VICTIM = 4242;
const AGENTS = join(dirname(fileURLToPath(import.meta.url)), "..", "agents");

export interface VictimResult {
  attempts: number;
  ok: number;
  failures: number;
  errors: string[];
  p50Ms: number;
  p99Ms: number;
}

export interface Spawned {
  child: ChildProcess;
  /** stdout and stderr so far. */
  out(): string;
  err(): string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/** Runs `args` under node (or `command`) as uid (and gid uid), collecting its output. */
export function spawnAs(
  uid: number,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  command = process.execPath,
): Spawned {
  const child = spawn(command, args, { uid, gid: uid, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, out: () => out, err: () => err, exited };
}

/** Starts the victim loop as VICTIM; stop() ends it and returns what it saw. */
export function startVictim(b: BrokerProcess, slot = 0): { stop(): Promise<VictimResult> } {
  return victimOf(spawnAs(VICTIM, [join(AGENTS, "victim.js"), b.socket, String(slot)]));
}

/**
 * Starts the workload-protocol victim (agents/workload-victim.ts: one session for the whole attack,
 * granting and releasing) as uid; stop() ends it and returns what it saw.
 */
export function startWorkloadVictim(
  b: BrokerProcess,
  uid = VICTIM,
  slot = 0,
): { stop(): Promise<VictimResult & { events: number }> } {
  return victimOf(spawnAs(uid, [join(AGENTS, "workload-victim.js"), b.fdSocket, String(slot)]));
}

function victimOf<R extends VictimResult>({ child, out, err, exited }: Spawned): { stop(): Promise<R> } {
  return {
    async stop() {
      // At least 5 cycles first (a quick attack must not end the victim before it started).
      const t0 = Date.now();
      while (!out().includes('"phase":"running"') && child.exitCode === null && Date.now() - t0 < 60_000)
        await new Promise((r) => setTimeout(r, 20));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
      const line = out().trim().split("\n").pop() ?? "";
      try {
        return JSON.parse(line) as R;
      } catch {
        throw new Error(`the victim printed no result: ${out()}\n${err()}`);
      }
    },
  };
}

/** The victim kept working: at least `min` of its cycles succeeded (and there were some). */
export function assertVictim(r: VictimResult, min = 0.99): void {
  assert.ok(r.attempts >= 5, `the victim made only ${r.attempts} attempts: ${r.errors.join("; ")}`);
  assert.ok(
    r.ok / r.attempts >= min,
    `the victim succeeded in ${r.ok}/${r.attempts} cycles (< ${min * 100} %): ${r.errors.join("; ")}`,
  );
}

export interface Sample {
  fds: number;
  fdLimit: number;
  rssMB: number;
}

export function sample(b: BrokerProcess): Sample {
  const status = readFileSync(`/proc/${b.pid}/status`, "utf8");
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const limits = readFileSync(`/proc/${b.pid}/limits`, "utf8");
  const fdLimit = Number(/Max open files\s+(\d+)/.exec(limits)?.[1] ?? 0);
  return { fds: b.fdCount(), fdLimit, rssMB: Math.round((rss / 1024) * 10) / 10 };
}

/** Samples brokerd every everyMs until stop(); returns the peaks. */
export function watch(b: BrokerProcess, everyMs = 100): { stop(): { maxFds: number; maxRssMB: number } } {
  let maxFds = 0;
  let maxRssMB = 0;
  const t = setInterval(() => {
    try {
      const s = sample(b);
      maxFds = Math.max(maxFds, s.fds);
      maxRssMB = Math.max(maxRssMB, s.rssMB);
    } catch {
      /* brokerd gone: the test's alive check says so */
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(t);
      return { maxFds, maxRssMB };
    },
  };
}

/** brokerd is still running (not exited, not killed). */
export function assertAlive(b: BrokerProcess): void {
  assert.equal(b.proc.exitCode, null, `brokerd exited with ${b.proc.exitCode}:\n${b.stderr().slice(-2000)}`);
  assert.equal(b.proc.signalCode, null, `brokerd was killed by ${b.proc.signalCode}`);
}

export type Attacker = ChildProcess & {
  /** The agent's last JSON line once it exits. */
  result(): Promise<unknown>;
  /** Resolves when the agent prints {"phase": name} (e.g. "holding": the attack is in place). */
  phase(name: string): Promise<void>;
};

/** Runs an attacker agent (test/hostile/agents/NAME.js) as uid 65534 (or as uid, with node's nodeArgs). */
export function attacker(name: string, args: string[], uid = ATTACKER, nodeArgs: string[] = []): Attacker {
  return agentOf(name, spawnAs(uid, [...nodeArgs, join(AGENTS, `${name}.js`), ...args]));
}

/**
 * Runs a Python attacker agent (test/hostile/agents/NAME.py, from the source tree: tsc does not
 * copy it) as uid, with Debian's python3.
 */
export function pythonAttacker(name: string, args: string[], uid = ATTACKER): Attacker {
  const script = join(AGENTS, "..", "..", "..", "hostile", "agents", `${name}.py`);
  return agentOf(name, spawnAs(uid, [script, ...args], process.env, "/usr/bin/python3"));
}

/** An agent's process with its phases and result (its last JSON line). */
function agentOf(name: string, spawned: Spawned): Attacker {
  const { child, out, err, exited } = spawned;
  const waiting: { name: string; resolve(): void }[] = [];
  child.stdout!.on("data", () => {
    for (const w of [...waiting])
      if (out().includes(`"phase":"${w.name}"`)) {
        waiting.splice(waiting.indexOf(w), 1);
        w.resolve();
      }
  });
  const phase = (name: string) =>
    new Promise<void>((resolve, reject) => {
      if (out().includes(`"phase":"${name}"`)) return resolve();
      waiting.push({ name, resolve });
      void exited.then((code) =>
        reject(new Error(`attacker ${name} exited ${code} before "${name}":\n${err().slice(-2000)}`)),
      );
    });
  const done = exited.then((code) => {
    const line = out().trim().split("\n").pop() ?? "";
    try {
      return JSON.parse(line) as unknown;
    } catch {
      throw new Error(`attacker ${name} exited ${code} with no result:\n${out()}\n${err().slice(-2000)}`);
    }
  });
  return Object.assign(child, { result: () => done, phase });
}

/** Prints one line of measured figures for this test. */
export function report(test: string, figures: Record<string, unknown>): void {
  console.log(`hostile: ${JSON.stringify({ test, ...figures })}`);
}

/**
 * One brokerd for a suite: started before its tests, stopped after. `baseline` is its fd count
 * once it has settled, what "no fd leaked" is measured against.
 */
export function suiteBrokerd(opts: StartOptions = {}): {
  readonly b: BrokerProcess;
  readonly baseline: number;
} {
  const suite = { b: undefined as unknown as BrokerProcess, baseline: 0 };
  before(async () => {
    suite.b = await startBrokerd(opts);
    await new Promise((r) => setTimeout(r, 200));
    suite.baseline = suite.b.fdCount();
  });
  after(async () => {
    await suite.b?.stop();
  });
  return suite;
}

/**
 * An attack's observers: the victim granting and brokerd's peaks sampled, from now until stop(),
 * which also checks that brokerd is still up.
 */
export function observe(b: BrokerProcess): {
  stop(): Promise<{ victim: VictimResult; peak: { maxFds: number; maxRssMB: number } }>;
} {
  const victim = startVictim(b);
  const peaks = watch(b);
  return {
    async stop() {
      const v = await victim.stop();
      const peak = peaks.stop();
      assertAlive(b);
      return { victim: v, peak };
    },
  };
}
