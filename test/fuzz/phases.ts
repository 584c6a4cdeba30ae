// phases.ts: the two fuzz loops, one per brokerd socket, each against its own live brokerd so a
// crash in one cannot starve the other. A loop runs until its time or iteration budget is spent;
// after every case it checks that brokerd is still alive, and on a death records a crash (with the
// recent cases, see target.ts), restarts brokerd and goes on, up to maxCrashes.
import { describeFdCase, type FdCase, generateFdCase, runFdCase } from "./fd-channel.js";
import { describeGrpcCase, generateGrpcCase, RawBroker, runGrpcCase } from "./grpc-unary.js";
import { emptyPool } from "./messages.js";
import { Prng } from "./prng.js";
import { Problems, Tally } from "./stats.js";
import { type Crash, Target } from "./target.js";
import { TicketSource } from "./tickets.js";
import { generateWorkloadCase } from "./workload.js";

export interface Budget {
  seed: number;
  seconds: number;
  iterations: number;
  maxCrashes: number;
}

export interface PhaseReport {
  name: string;
  iterations: number;
  seconds: number;
  execsPerSecond: number;
  outcomes: Tally;
  statuses: Tally;
  problems: Problems;
  crashes: Crash[];
  endedEarly: string | null;
  target: Target;
}

const RECENT = 10;

/** Distinguishes seeds per phase so `--only` runs generate what a full run generates. */
const PHASE_SALT = { fd: 0x0fdc4a11, grpc: 0x67b9c0de } as const;

/** One case: what to put in a crash file, and the spec problems it showed. */
type Step = (i: number, rng: Prng) => Promise<{ record: unknown; problems: string[] }>;

async function loop(
  name: keyof typeof PHASE_SALT,
  budget: Budget,
  target: Target,
  step: Step,
  onRestart: () => void,
  report: PhaseReport,
): Promise<void> {
  const root = new Prng((budget.seed ^ PHASE_SALT[name]) >>> 0);
  const recent: unknown[] = [];
  const t0 = Date.now();
  const end = t0 + budget.seconds * 1000;
  let i = 0;
  for (; i < budget.iterations && Date.now() < end; i++) {
    let record: unknown;
    let problems: string[];
    try {
      ({ record, problems } = await step(i, root.fork(i)));
    } catch (e) {
      // A runner that throws either met a dead brokerd (checked below) or is itself broken.
      record = { runnerError: (e as Error).message };
      problems = [`runner error: ${(e as Error).message}`];
      await new Promise((r) => setTimeout(r, 200));
    }
    recent.push({ iteration: i, ...(record as object) });
    if (recent.length > RECENT) recent.shift();
    let crash = await target.checkCrash(i, recent);
    // A case that met a dying brokerd shows resets and missing replies: the crash explains them.
    // Its exit is reported a little later than the reset, so a case with problems waits for it.
    if (!crash && problems.length > 0) {
      await new Promise((r) => setTimeout(r, 300));
      crash = await target.checkCrash(i, recent);
    }
    if (!crash) for (const p of problems) report.problems.add(i, p);
    if (crash) {
      report.crashes.push(crash);
      console.error(
        `fuzz[${name}]: brokerd died (${crash.exit}) at iteration ${i}; reproducer: ${crash.file}`,
      );
      recent.length = 0;
      onRestart();
      if (report.crashes.length >= budget.maxCrashes) {
        report.endedEarly = `${report.crashes.length} crashes (--max-crashes ${budget.maxCrashes})`;
        i++;
        break;
      }
    }
  }
  report.iterations = i;
  report.seconds = (Date.now() - t0) / 1000;
  report.execsPerSecond = Math.round((i / Math.max(report.seconds, 0.001)) * 10) / 10;
}

function newReport(name: string, target: Target): PhaseReport {
  return {
    name,
    iterations: 0,
    seconds: 0,
    execsPerSecond: 0,
    outcomes: new Tally(),
    statuses: new Tally(),
    problems: new Problems(),
    crashes: [],
    endedEarly: null,
    target,
  };
}

/**
 * fd.sock: framing, FdRequest decoding, tickets, fds sent to brokerd, hanging up mid-reply; and the
 * workload protocol on the same socket (hellos, sessions, every request kind).
 */
export async function fdPhase(budget: Budget): Promise<PhaseReport> {
  const target = new Target("fd");
  await target.start();
  const report = newReport("fd-channel", target);
  let tickets = new TicketSource(target.broker.socket);
  const step: Step = async (_i, rng) => {
    // Two cases in five speak the workload protocol (workload.ts), the rest the ticket protocol.
    const workload = rng.chance(0.4);
    const real = !workload && rng.chance(0.25) ? [await tickets.fresh()] : [];
    const c: FdCase = workload ? generateWorkloadCase(rng) : generateFdCase(rng, real);
    const record = { type: "fd", case: describeFdCase(c) };
    const r = await runFdCase(target.broker.fdSocket, c);
    report.outcomes.add(c.kind, `${c.end}->${r.outcome}`);
    for (const s of r.replies) report.statuses.add(r.workload ? "WorkloadReply" : "FdReply", s);
    return { record, problems: r.problems.map((p) => `${c.kind}/${c.end}: ${p}`) };
  };
  await loop(
    "fd",
    budget,
    target,
    step,
    () => {
      tickets.close();
      tickets = new TicketSource(target.broker.socket);
    },
    report,
  );
  tickets.close();
  return report;
}

/** broker.sock: raw request bytes for every BrokerService method, per-status counts. */
export async function grpcPhase(budget: Budget): Promise<PhaseReport> {
  const target = new Target("grpc");
  await target.start();
  const report = newReport("grpc", target);
  let conn: RawBroker | null = null;
  let callsLeft = 0;
  let pool = emptyPool();
  const step: Step = async (_i, rng) => {
    // A connection is a session: rotating it now and then resets quotas and exercises teardown.
    if (!conn || callsLeft-- <= 0) {
      conn?.close();
      conn = new RawBroker(target.broker.socket);
      callsLeft = rng.range(20, 200);
      pool = emptyPool();
    }
    const c = generateGrpcCase(rng, pool);
    const record = { type: "grpc", case: describeGrpcCase(c) };
    // A Lease ends its session when it ends, so it gets a connection of its own.
    const leaseConn = c.stream ? new RawBroker(target.broker.socket) : null;
    try {
      const r = await runGrpcCase(leaseConn ?? conn, c, pool);
      report.outcomes.add(c.method, r.code);
      report.statuses.add(r.decodable ? "decodable" : "undecodable", r.code);
      if (r.code === "INTERNAL") report.statuses.add("INTERNAL details", r.details.slice(0, 120));
      return { record, problems: r.problems };
    } finally {
      leaseConn?.close();
    }
  };
  await loop(
    "grpc",
    budget,
    target,
    step,
    () => {
      conn?.close();
      conn = null;
    },
    report,
  );
  (conn as RawBroker | null)?.close();
  return report;
}
