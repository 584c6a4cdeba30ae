// main.ts: the byte-level fuzzer of a live brokerd (docs/design.md §10, "Fuzzing"), the TypeScript half
// of scripts/fuzz.sh. Runs the fd-channel phase and the gRPC phase (phases.ts), each against its own
// brokerd, then judges the run with named checks and exits non-zero if any required check fails.
//
//   node test/dist/fuzz/main.js [--seconds N] [--iterations N] [--seed S] [--only fd|grpc]
//                               [--max-crashes N]
//   node test/dist/fuzz/main.js --replay test-output/fuzz/crash-....json
//
// --seconds is the total budget, split evenly between the phases. The seed is printed first; the
// same seed regenerates the same cases (real tickets and brokerd's timing aside).
// Checks: brokerd-no-crash, brokerd-alive, normal-client, normal-workload (a workload-protocol
// session maps and releases after the fd phase), brokerd-fds, fuzzer-fds, spec-problems are
// required. no-internal-status (no INTERNAL answer to any gRPC request) and status-and-message
// (every fd.sock reply, FdReply or WorkloadReply, has a status other than INTERNAL, and a message
// when it refuses) are reported and become required with FUZZ_STRICT_STATUS=1.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseFdCase, runFdCase } from "./fd-channel.js";
import { parseGrpcCase, RawBroker, runGrpcCase } from "./grpc-unary.js";
import { emptyPool } from "./messages.js";
import { type Budget, fdPhase, grpcPhase, type PhaseReport } from "./phases.js";
import { freshSeed } from "./prng.js";
import { normalClientWorks, normalWorkloadWorks, OUTPUT_DIR, Target, toJson } from "./target.js";

/** brokerd may keep a few fds more than at its baseline (pollers, a lingering refused socket). */
const BROKERD_FD_SLACK = 4;
const FUZZER_FD_SLACK = 2;

interface Args extends Budget {
  only: "fd" | "grpc" | null;
  replay: string | null;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    seed: freshSeed(),
    seconds: 600,
    iterations: Number.POSITIVE_INFINITY,
    maxCrashes: 5,
    only: null,
    replay: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = argv[i + 1];
    const num = (): number => {
      const n = Number(v);
      if (v === undefined || !Number.isFinite(n) || n < 0)
        throw new Error(`${k} needs a non-negative number, got ${v}`);
      i++;
      return n;
    };
    if (k === "--seconds") a.seconds = num();
    else if (k === "--iterations") a.iterations = num();
    else if (k === "--seed") a.seed = num() >>> 0;
    else if (k === "--max-crashes") a.maxCrashes = Math.max(1, num());
    else if (k === "--only" && (v === "fd" || v === "grpc")) {
      a.only = v;
      i++;
    } else if (k === "--replay" && v) {
      a.replay = v;
      i++;
    } else throw new Error(`unknown argument ${k} (see the header of test/fuzz/main.ts)`);
  }
  return a;
}

function ownFds(): number {
  return readdirSync("/proc/self/fd").length;
}

interface Check {
  name: string;
  ok: boolean;
  required: boolean;
  detail: string;
}

async function judge(reports: PhaseReport[], fuzzerFdsBefore: number): Promise<Check[]> {
  const checks: Check[] = [];
  const strict = process.env.FUZZ_STRICT_STATUS === "1";
  for (const r of reports) {
    const t = r.target;
    checks.push({
      name: `${r.name}: brokerd-no-crash`,
      ok: r.crashes.length === 0,
      required: true,
      detail:
        r.crashes.length === 0
          ? "brokerd never died"
          : r.crashes.map((c) => `${c.exit} at iteration ${c.iteration}: ${c.file}`).join("; "),
    });
    checks.push({
      name: `${r.name}: brokerd-alive`,
      ok: t.alive(),
      required: true,
      detail: `pid ${t.broker.pid}`,
    });
    let normal = "";
    try {
      normal = `Hello + ListDevices OK (${(await normalClientWorks(t.broker.socket)).devices} devices)`;
    } catch (e) {
      normal = `a normal client failed: ${(e as Error).message}`;
    }
    checks.push({
      name: `${r.name}: normal-client`,
      ok: normal.startsWith("Hello"),
      required: true,
      detail: normal,
    });
    const fds = await t.fdsSettle(BROKERD_FD_SLACK);
    checks.push({
      name: `${r.name}: brokerd-fds`,
      ok: fds.ok,
      required: true,
      detail: `baseline ${fds.baseline}, now ${fds.now} (slack ${BROKERD_FD_SLACK})`,
    });
    checks.push({
      name: `${r.name}: spec-problems`,
      ok: r.problems.total === 0,
      required: true,
      detail:
        r.problems.total === 0
          ? "none"
          : r.problems
              .toJSON()
              .map((p) => `${p.count}x ${p.message} (first at ${p.firstIteration})`)
              .join("; "),
    });
    if (r.name === "fd-channel") {
      // Every reply on fd.sock, either protocol: a status that is not INTERNAL, and a message
      // with every refusal.
      const bad = [...r.statuses.rows].flatMap(([row, cols]) =>
        [...cols].filter(([col]) => /INTERNAL|no message/.test(col)).map(([col, n]) => `${n}x ${row} ${col}`),
      );
      checks.push({
        name: "fd-channel: status-and-message",
        ok: bad.length === 0,
        required: strict,
        detail: `${bad.length === 0 ? "every refusal had a status and a message" : bad.join("; ")}${strict ? "" : "; not enforced, set FUZZ_STRICT_STATUS=1"}`,
      });
      let workload = "";
      try {
        workload = `hello + open + grant + release OK (${await normalWorkloadWorks(t.broker.fdSocket)})`;
      } catch (e) {
        workload = `a normal workload failed: ${(e as Error).message}`;
      }
      checks.push({
        name: "fd-channel: normal-workload",
        ok: workload.startsWith("hello"),
        required: true,
        detail: workload,
      });
    }
    if (r.name === "grpc") {
      const internal = r.statuses.column("INTERNAL");
      checks.push({
        name: "grpc: no-internal-status",
        ok: internal === 0,
        required: strict,
        detail: `${internal} INTERNAL answers (undecodable ${r.statuses.get("undecodable", "INTERNAL")}, decodable ${r.statuses.get("decodable", "INTERNAL")})${strict ? "" : "; not enforced, set FUZZ_STRICT_STATUS=1"}`,
      });
    }
  }
  // Our own count is taken with every brokerd stopped: their stdio pipes are fds of this process.
  for (const r of reports) await r.target.stop();
  await new Promise((r) => setTimeout(r, 200));
  const after = ownFds();
  checks.push({
    name: "fuzzer-fds",
    ok: after <= fuzzerFdsBefore + FUZZER_FD_SLACK,
    required: true,
    detail: `the fuzzer process had ${fuzzerFdsBefore} fds before, ${after} after (every fd received is closed)`,
  });
  return checks;
}

function printReport(seed: number, reports: PhaseReport[], checks: Check[]): boolean {
  for (const r of reports) {
    console.log(
      `\n== ${r.name}: ${r.iterations} cases in ${r.seconds.toFixed(1)} s (${r.execsPerSecond}/s), ${r.crashes.length} crashes, ${r.target.restarts} restarts${r.endedEarly ? `; ended early: ${r.endedEarly}` : ""}`,
    );
    console.log(`outcomes:\n${r.outcomes.format()}`);
    console.log(`status codes:\n${r.statuses.format()}`);
  }
  console.log("\n== checks");
  let ok = true;
  for (const c of checks) {
    const mark = c.ok ? "PASS" : c.required ? "FAIL" : "WARN";
    if (!c.ok && c.required) ok = false;
    console.log(`${mark} ${c.name}: ${c.detail}`);
  }
  mkdirSync(OUTPUT_DIR, { recursive: true });
  const file = join(OUTPUT_DIR, `summary-${seed}.json`);
  writeFileSync(
    file,
    `${toJson({
      seed,
      phases: reports.map((r) => ({
        ...r,
        target: { baselineFds: r.target.baselineFds, restarts: r.target.restarts },
      })),
      checks,
    })}\n`,
  );
  console.log(`\nseed ${seed}; summary: ${file}; ${ok ? "all required checks passed" : "FAILED"}`);
  return ok;
}

/** Runs every case of a crash file alone against a fresh brokerd and says which ones kill it. */
async function replay(file: string): Promise<boolean> {
  const crash = JSON.parse(readFileSync(file, "utf8")) as {
    recent: { iteration: number; type?: string; case?: unknown }[];
  };
  let killers = 0;
  for (const rec of crash.recent) {
    if (!rec.case) continue;
    const target = new Target("replay");
    await target.start();
    try {
      if (rec.type === "fd")
        await runFdCase(target.broker.fdSocket, parseFdCase(rec.case as Parameters<typeof parseFdCase>[0]));
      else {
        const conn = new RawBroker(target.broker.socket);
        await runGrpcCase(conn, parseGrpcCase(rec.case as Parameters<typeof parseGrpcCase>[0]), emptyPool());
        conn.close();
      }
    } catch (e) {
      console.log(`iteration ${rec.iteration}: runner error ${(e as Error).message}`);
    }
    await new Promise((r) => setTimeout(r, 500));
    const dead = !target.alive();
    if (dead) killers++;
    console.log(
      `iteration ${rec.iteration} (${rec.type}): brokerd ${dead ? `DIED\n${target.broker.stderr().slice(-1500)}` : "survived"}`,
    );
    await target.stop();
  }
  return killers === 0;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.replay) return (await replay(args.replay)) ? 0 : 1;
  const phases = args.only ? [args.only] : (["fd", "grpc"] as const);
  const per = { ...args, seconds: args.seconds / phases.length };
  console.log(
    `fuzz: seed ${args.seed}; ${phases.join(" + ")}; ${per.seconds} s each; at most ${args.iterations} cases each`,
  );
  const fdsBefore = ownFds();
  const reports: PhaseReport[] = [];
  try {
    for (const p of phases) reports.push(p === "fd" ? await fdPhase(per) : await grpcPhase(per));
    const checks = await judge(reports, fdsBefore);
    return printReport(args.seed, reports, checks) ? 0 : 1;
  } finally {
    for (const r of reports) await r.target.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`fuzz: ${(e as Error).stack ?? e}`);
    process.exit(2);
  },
);
