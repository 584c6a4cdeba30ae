// Victim agent on the workload protocol: an honest C-style workload (run as a uid other than the
// attacker's) that keeps ONE session for the whole attack, as a driver would: hello, open sim0,
// then in a loop grant BAR2's page SLOT (4 KiB WC read-write), mmap the fd, write and read back,
// unmap, release. Every step counts; a cycle succeeds only if all of it did within the timeout.
// Events pushed on its connection (health changes the attack causes) are read and counted, never
// an error; a revocation of its own mapping or the end of its lease is one. Runs until SIGTERM,
// then prints the harness's VictimResult ({attempts, ok, failures, errors, p50Ms, p99Ms}) plus
// {events}. Never holds more than one mapping.
import { closeFd, mmap } from "@vfio-broker/native";
import { Attribute, Layout, Prot } from "@vfio-broker/proto";
import { statusName, WorkloadClient } from "../../e2e/agents/workload-client.js";

const [fdSocket, slotArg = "0"] = process.argv.slice(2) as [string, string?];
const page = BigInt(16 + Number(slotArg));
let stopping = false;
process.on("SIGTERM", () => {
  stopping = true;
});

let attempts = 0;
let ok = 0;
let events = 0;
const errors = new Map<string, number>();
const lat: number[] = [];
const fail = (msg: string) => errors.set(msg.slice(0, 160), (errors.get(msg.slice(0, 160)) ?? 0) + 1);

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(`cycle took over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

/** Events met while waiting for replies: health changes are fine, anything about us is not. */
function drainEvents(c: WorkloadClient): void {
  for (const e of c.events.splice(0)) {
    events++;
    if (e.kind.case === "revocation") fail(`revoked: ${e.kind.value.reason} ${e.kind.value.message}`);
    if (e.kind.case === "leaseEnded") fail(`lease ended: ${e.kind.value.reason} ${e.kind.value.message}`);
  }
}

const c = await WorkloadClient.connect(fdSocket);
const hello = (await c.hello({ clientName: "workload-victim" })).reply;
if (hello.kind.case !== "hello") throw new Error(`hello: ${statusName(hello.status)} ${hello.message}`);
const open = (
  await c.call({ kind: { case: "openDevice", value: { deviceId: "sim0", layout: Layout.COMPACT } } })
).reply;
if (open.kind.case !== "deviceOpened") throw new Error(`open: ${statusName(open.status)} ${open.message}`);
const deviceFileId = open.kind.value.deviceFileId;

async function cycle(k: number): Promise<void> {
  const { reply, fds } = await c.call({
    kind: {
      case: "grant",
      value: {
        deviceFileId,
        regionIndex: 2,
        offset: page * 4096n,
        length: 4096n,
        attribute: Attribute.WC,
        prot: Prot.READ_WRITE,
      },
    },
  });
  if (reply.kind.case !== "grant" || fds.length !== 1) {
    for (const fd of fds) closeFd(fd);
    throw new Error(`grant: ${statusName(reply.status)} ${reply.grpcCode} ${reply.message}`);
  }
  const g = reply.kind.value;
  const m = mmap(fds[0]!, g.mmapOffset, Number(g.length), "rw");
  closeFd(fds[0]!);
  const v = (k * 2654435761) >>> 0;
  const view = new DataView(m.buffer);
  view.setUint32(0x40, v, true);
  const back = view.getUint32(0x40, true);
  m.unmap();
  if (back !== v) throw new Error("read back another value than written");
  const rel = (await c.call({ kind: { case: "release", value: { deviceFileId, cookie: g.cookie } } })).reply;
  if (rel.kind.case !== "release") throw new Error(`release: ${statusName(rel.status)} ${rel.message}`);
}

for (let k = 0; !stopping; k++) {
  attempts++;
  const t0 = performance.now();
  try {
    await withTimeout(cycle(k), 5000);
    ok++;
    lat.push(performance.now() - t0);
  } catch (e) {
    fail((e as Error).message);
  }
  drainEvents(c);
  if (attempts === 5) process.stdout.write(`${JSON.stringify({ phase: "running" })}\n`);
  await new Promise((r) => setTimeout(r, 10));
}
c.close();
lat.sort((a, b) => a - b);
const q = (p: number) =>
  lat.length ? Number(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!.toFixed(2)) : 0;
process.stdout.write(
  `${JSON.stringify({
    attempts,
    ok,
    failures: attempts - ok,
    errors: [...errors].slice(0, 5).map(([m, n]) => `${n}x ${m}`),
    events,
    p50Ms: q(0.5),
    p99Ms: q(0.99),
  })}\n`,
);
process.exit(0);
