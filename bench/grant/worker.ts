// One client process of bench/grant/throughput.ts: after "go" on stdin, grants in a loop (map 4 KiB
// WC of its own page, write32, release) for the given seconds, or with "rt", fd-channel round trips
// without an fd (the baseline); prints {n, grants, p50, p99} (µs per loop step). argv: socket page
// seconds mode. Modes: rt; fast (release awaited); later (release not awaited: it rides in the
// next grant's FdBatch); batchN (mapMany of N pages, then their releases, not awaited, ride in the
// next batch); grpc (the gRPC path).
import { createInterface } from "node:readline";
import { create, toBinary } from "@bufbuild/protobuf";
import { connect } from "@vfio-broker/client";
import { FdSocket } from "@vfio-broker/native";
import { FdRequestSchema } from "@vfio-broker/proto";

const [socket, page, seconds, mode] = process.argv.slice(2) as [string, string, string, string];
// A gRPC session (the transport these figures were first measured on), with fd-channel grants
// unless the mode is grpc.
const c = await connect({
  socket,
  clientName: "bench-worker",
  lease: false,
  transport: "grpc",
  fdGrants: mode !== "grpc",
});
const df = await c.open("sim0");
const fdSock = await FdSocket.connect(c.fdSocketPath);
const unknown = toBinary(FdRequestSchema, create(FdRequestSchema, { ticket: "0".repeat(32) }));
const PER_BATCH = mode.startsWith("batch") ? Number(mode.slice(5)) : 1;
const offset = BigInt(page) * 4096n * BigInt(PER_BATCH);
let failed: unknown;
const noted = (e: unknown) => {
  failed ??= e;
};
const steps: Record<string, () => Promise<void>> = {
  rt: async () => {
    await fdSock.send(unknown);
    await fdSock.recv();
  },
  fast: async () => {
    const m = await df.map("BAR2", { offset, length: 4096n, attr: "wc" });
    m.write32(0, 1);
    await m.release();
  },
  later: async () => {
    const m = await df.map("BAR2", { offset, length: 4096n, attr: "wc" });
    m.write32(0, 1);
    m.release().catch(noted);
  },
  batch: async () => {
    const ms = await df.mapMany(
      Array.from({ length: PER_BATCH }, (_, i) => ({
        region: "BAR2",
        offset: offset + BigInt(i) * 4096n,
        length: 4096n,
        attr: "wc" as const,
      })),
    );
    for (const m of ms) {
      m.write32(0, 1);
      m.release().catch(noted);
    }
  },
};
steps.grpc = steps.fast!;
const once = steps[mode.startsWith("batch") ? "batch" : mode]!;
const grantsPerStep = mode === "rt" ? 0 : PER_BATCH;
for (let i = 0; i < 50; i++) await once();
console.log("ready");
await new Promise<void>((r) => createInterface({ input: process.stdin }).once("line", () => r()));
const us: number[] = [];
const end = performance.now() + Number(seconds) * 1000;
while (performance.now() < end) {
  const t0 = performance.now();
  await once();
  us.push((performance.now() - t0) * 1000);
}
us.sort((a, b) => a - b);
if (failed) throw failed;
console.log(
  JSON.stringify({
    n: us.length,
    grants: us.length * grantsPerStep,
    p50: us[us.length >> 1],
    p99: us[Math.floor(us.length * 0.99)],
  }),
);
fdSock.close();
await c.close();
process.exit(0);
