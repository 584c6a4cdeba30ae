// Victim agent: an honest client (run as a uid other than the attacker's) that keeps doing whole
// grants while an attack runs: a fresh connection, Hello, OpenDevice, CreateMapping (sim0 BAR2, WC),
// the fd from the fd channel, mmap, write and read back, ReleaseMapping, close. Every step counts:
// a cycle succeeds only if all of it did within the timeout. Runs until SIGTERM (or durationMs),
// then prints {attempts, ok, failures, errors (first few), p50Ms, p99Ms}. Cycles alternate between
// the client's two transports: even ones on the workload protocol (fd.sock only: its hello, grant,
// release and close), odd ones on gRPC (broker.sock's Hello and Lease, fd-channel grants), so an
// attack on either socket that hurts its honest users shows.
import { connect } from "@vfio-broker/client";

const [socket, slotArg = "0", durationArg = "600000"] = process.argv.slice(2);
const slot = Number(slotArg) * 8;
const end = Date.now() + Number(durationArg);
let stopping = false;
process.on("SIGTERM", () => {
  stopping = true;
});

let attempts = 0;
let ok = 0;
const errors = new Map<string, number>();
const lat: number[] = [];

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`cycle took over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

async function cycle(k: number): Promise<void> {
  const transport = k % 2 === 0 ? "workload" : "grpc";
  const client = await connect({ socket: socket!, clientName: "victim", timeoutMs: 5000, transport });
  try {
    const df = await client.open("sim0");
    const m = await df.map("BAR2", { offset: 0x100000n, length: 4096n, attr: "wc", prot: "rw" });
    const v = (k * 2654435761) >>> 0;
    m.write32(slot, v);
    if (m.read32(slot) !== v) throw new Error("read back another value than written");
    await m.release();
  } finally {
    await client.close();
  }
}

for (let k = 0; !stopping && Date.now() < end; k++) {
  attempts++;
  const t0 = performance.now();
  try {
    await withTimeout(cycle(k), 5000);
    ok++;
    lat.push(performance.now() - t0);
  } catch (e) {
    const msg = (e as Error).message.slice(0, 160);
    errors.set(msg, (errors.get(msg) ?? 0) + 1);
  }
  // The test's stop() waits for this, so every result has a few cycles in it.
  if (attempts === 5) process.stdout.write(`${JSON.stringify({ phase: "running" })}\n`);
  // A client doing real work, not a flood of its own.
  await new Promise((r) => setTimeout(r, 10));
}
lat.sort((a, b) => a - b);
const q = (p: number) =>
  lat.length ? Number(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!.toFixed(2)) : 0;
process.stdout.write(
  `${JSON.stringify({
    attempts,
    ok,
    failures: attempts - ok,
    errors: [...errors].slice(0, 5).map(([m, n]) => `${n}x ${m}`),
    p50Ms: q(0.5),
    p99Ms: q(0.99),
  })}\n`,
);
process.exit(0);
