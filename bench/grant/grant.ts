// Benchmark: the whole grant path a workload pays for one mapping, through a real brokerd process:
// CreateMapping (gRPC) + ticket on the fd channel + mmap + one 32-bit write + ReleaseMapping + munmap.
// Baselines measured in the same run against the same brokerd: a bare gRPC unary round trip
// (ListDevices) and a bare fd-channel round trip (an unknown ticket, answered without an fd).
// Usage: node bench/dist/grant/grant.js [iterations]   (default 2000)
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { connect } from "@vfio-broker/client";
import { FdSocket } from "@vfio-broker/native";
import { BrokerService, createClient, FdRequestSchema, Health } from "@vfio-broker/proto";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const N = Number(process.argv[2] ?? 2000);

async function startBrokerd(dir: string): Promise<ChildProcess> {
  // brokerd refuses a policy file others may write; use a copy with a known mode.
  const policy = join(dir, "policy.yaml");
  copyFileSync(join(REPO, "deploy/policy/sim-local.yaml"), policy);
  chmodSync(policy, 0o644);
  const proc = spawn(
    process.execPath,
    [
      join(REPO, "services/brokerd/dist/main.js"),
      "--runtime-dir",
      dir,
      "--policy",
      policy,
      "--metrics",
      "off",
      "--journal",
      join(dir, "journal.jsonl"),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => d.toString().includes('"ready"') && resolve());
    proc.once("exit", (c) => reject(new Error(`brokerd exited ${c}`)));
  });
  return proc;
}

async function time(label: string, n: number, fn: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await fn();
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  console.log(
    `| ${label.padEnd(44)} | ${us.toFixed(1).padStart(8)} | ${Math.round(1e6 / us)
      .toString()
      .padStart(9)} |`,
  );
  return us;
}

const dir = mkdtempSync(join(tmpdir(), "vfio-broker-bench-"));
const brokerd = await startBrokerd(dir);
try {
  const raw = createClient(BrokerService, `unix:${join(dir, "broker.sock")}`);
  const health = createClient(Health, `unix:${join(dir, "broker.sock")}`);
  const client = await connect({ socket: join(dir, "broker.sock"), clientName: "bench" });
  const df = await client.open("sim0");
  const fdSock = await FdSocket.connect(join(dir, "fd.sock"));
  const unknown = toBinary(FdRequestSchema, create(FdRequestSchema, { ticket: "0".repeat(32) }));

  const ops: [string, () => Promise<void>][] = [];
  let v = 0;
  ops.push([
    "baseline: gRPC unary (grpc.health.v1 Check)",
    async () => void (await health.check({ service: "" })),
  ]);
  ops.push(["ListDevices (policy filter + 2 devices)", async () => void (await raw.listDevices({}))]);
  ops.push([
    "baseline: fd channel round trip (no fd)",
    async () => {
      await fdSock.send(unknown);
      await fdSock.recv();
    },
  ]);
  ops.push([
    "grant: map 4 KiB WC + write32 + release",
    async () => {
      const m = await df.map("BAR2", { offset: 0n, length: 4096n, attr: "wc" });
      m.write32(0, v++);
      await m.release();
    },
  ]);
  // Warm every path (JIT, grpc-js, brokerd) before measuring any of them.
  for (const [, fn] of ops) for (let i = 0; i < 500; i++) await fn();
  console.log(
    `grant: ${N} iterations each, one client, brokerd as its own process (audit journal to a file)`,
  );
  console.log(`| ${"operation".padEnd(44)} | ${"µs / op".padStart(8)} | ${"ops / s".padStart(9)} |`);
  console.log(`|${"-".repeat(46)}|${"-".repeat(10)}|${"-".repeat(11)}|`);
  const us: number[] = [];
  for (const [label, fn] of ops) us.push(await time(label, N, fn));
  const [grpc, , fd, grant] = us as [number, number, number, number];
  console.log(
    `ratio grant / (2 x gRPC + fd channel): ${(grant / (2 * grpc + fd)).toFixed(2)}x ` +
      `(a grant is two gRPC calls, CreateMapping and ReleaseMapping, one fd round trip with SCM_RIGHTS, mmap and munmap)`,
  );
  fdSock.close();
  await client.close();
  raw.close();
  health.close();
} finally {
  brokerd.kill("SIGTERM");
  await new Promise((r) => brokerd.once("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
