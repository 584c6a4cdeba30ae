// target.ts: the live brokerd under fuzz. Starts it with startBrokerd (its own process, temp
// sockets, the sim backend), takes its fd baseline once it has served a normal client, notices when
// it died (a crash: recorded with its stderr and the last cases sent, then restarted so one bug does
// not hide the next), and runs the end-of-run health checks a normal client would notice.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { closeFd } from "@vfio-broker/native";
import { Attribute, BrokerService, createClient, FdStatus, Prot } from "@vfio-broker/proto";
import { type Received, WorkloadClient } from "../e2e/agents/workload-client.js";
import { type BrokerProcess, REPO, startBrokerd, until } from "../lib/brokerd.js";

/** Where crash reproducers go (ignored by git: test-output/). */
export const OUTPUT_DIR = join(REPO, "test-output", "fuzz");

/** JSON with bigints as strings and Buffers as hex (Buffer.toJSON runs before a replacer sees it). */
export function toJson(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, x) => {
      if (typeof x === "bigint") return x.toString();
      if (x && x.type === "Buffer" && Array.isArray(x.data)) return Buffer.from(x.data).toString("hex");
      return x;
    },
    2,
  );
}

export interface Crash {
  phase: string;
  iteration: number;
  exit: string;
  stderr: string;
  file: string;
}

/** A normal client's Hello + ListDevices on its own connection; throws if either fails. */
export async function normalClientWorks(socket: string): Promise<{ devices: number }> {
  const c = createClient(BrokerService, `unix:${socket}`, undefined, { "grpc.use_local_subchannel_pool": 1 });
  try {
    await c.hello({ clientName: "fuzz-health", clientVersion: "0" }, { timeoutMs: 5000 });
    const list = await c.listDevices({}, { timeoutMs: 5000 });
    if (list.devices.length === 0) throw new Error("ListDevices returned no devices");
    return { devices: list.devices.length };
  } finally {
    c.close();
  }
}

/**
 * A normal workload's session on fd.sock (workload.proto): hello, open sim0, grant BAR2's last
 * page WC and release it; throws if any step fails. Returns the session id.
 */
export async function normalWorkloadWorks(fdSocket: string): Promise<string> {
  const c = await WorkloadClient.connect(fdSocket);
  const step = async (what: string, r: Promise<Received>) => {
    const got = await withTimeout(r, what);
    for (const fd of got.fds) closeFd(fd);
    if (got.reply.status !== FdStatus.OK)
      throw new Error(`${what}: ${FdStatus[got.reply.status]} ${got.reply.message}`);
    return got.reply;
  };
  try {
    const hello = await step("hello", c.hello({ clientName: "fuzz-health" }));
    const open = await step("open", c.call({ kind: { case: "openDevice", value: { deviceId: "sim0" } } }));
    const deviceFileId = open.kind.case === "deviceOpened" ? open.kind.value.deviceFileId : 0n;
    const g = await step(
      "grant",
      c.call({
        kind: {
          case: "grant",
          value: {
            deviceFileId,
            regionIndex: 2,
            // BAR2's last page: one the fuzz cases never ask for (their mappings, held by this
            // process once their connection closed, keep their pages booked: docs/security.md §2.1).
            offset: (16n << 20n) - 4096n,
            length: 4096n,
            attribute: Attribute.WC,
            prot: Prot.READ_WRITE,
          },
        },
      }),
    );
    const cookie = g.kind.case === "grant" ? g.kind.value.cookie : 0n;
    await step("release", c.call({ kind: { case: "release", value: { deviceFileId, cookie } } }));
    return hello.kind.case === "hello" ? hello.kind.value.sessionId : "";
  } finally {
    c.close();
  }
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no reply in 5 s`)), 5000);
    }),
  ]).finally(() => clearTimeout(t));
}

export class Target {
  broker!: BrokerProcess;
  baselineFds = 0;
  readonly crashes: Crash[] = [];
  restarts = 0;

  constructor(readonly phase: string) {}

  async start(): Promise<void> {
    this.broker = await startBrokerd();
    // The baseline is taken after one full normal round trip, so fds brokerd opens lazily on first
    // use are not mistaken for leaks.
    await normalClientWorks(this.broker.socket);
    await new Promise((r) => setTimeout(r, 200));
    this.baselineFds = this.broker.fdCount();
  }

  alive(): boolean {
    return this.broker.proc.exitCode === null && this.broker.proc.signalCode === null;
  }

  /** If brokerd died, records a crash with the cases that led to it and starts a fresh one. */
  async checkCrash(iteration: number, recent: readonly unknown[]): Promise<Crash | null> {
    if (this.alive()) {
      // An exit is reported asynchronously; give a just-killed process a moment to be seen as dead.
      await new Promise((r) => setImmediate(r));
      if (this.alive()) return null;
    }
    const p = this.broker.proc;
    const exit = p.signalCode ? `signal ${p.signalCode}` : `exit code ${p.exitCode}`;
    mkdirSync(OUTPUT_DIR, { recursive: true });
    const file = join(OUTPUT_DIR, `crash-${this.phase}-${process.pid}-${iteration}.json`);
    const crash: Crash = {
      phase: this.phase,
      iteration,
      exit,
      stderr: this.broker.stderr().slice(-4000),
      file,
    };
    writeFileSync(file, `${toJson({ ...crash, recent })}\n`);
    this.crashes.push(crash);
    await this.broker.stop();
    await this.start();
    this.restarts++;
    return crash;
  }

  /** Waits (up to 10 s) for brokerd's fd count to come back within slack of the baseline. */
  async fdsSettle(slack: number): Promise<{ baseline: number; now: number; ok: boolean }> {
    let now = this.broker.fdCount();
    try {
      await until(
        "brokerd's fd count back near its baseline",
        () => {
          now = this.broker.fdCount();
          return now <= this.baselineFds + slack;
        },
        10_000,
        100,
      );
      return { baseline: this.baselineFds, now, ok: true };
    } catch {
      return { baseline: this.baselineFds, now, ok: false };
    }
  }

  async stop(): Promise<void> {
    await this.broker.stop();
  }
}
