// Attacker agent on the workload protocol (proto/vfiobroker/v1/workload.proto), raw frames through
// test/e2e/agents/workload-client.ts, as whatever uid runs it. Modes (argv: MODE FDSOCK ...):
//   quota BROKERSOCK GRPC N   GRPC gRPC sessions (Hello), then N workload hellos, then one more gRPC
//                             Hello; then closes one workload session and tries gRPC Hello until
//                             it is let in (the slot given back); holds the rest
//   uids FIRST COUNT PER      (run as root) for each uid FIRST..FIRST+COUNT-1, PER workload hellos on
//                             connections made with the effective uid set to it (SO_PEERCRED
//                             records it); holds them all
//   silent N                  N workload hellos, then nothing at all on any of them; holds them all
//   mute N                    N connections that never send a byte; waits until brokerd closed
//                             every one (it reads what came first: BUSY, or nothing)
//   opens N                   one session: opens sim1 N times, never closing a device file; holds it
//   hog N                     one session: opens sim1 and grants N pages (BAR4, 4 KiB WC each) without
//                             ever releasing (the fds are closed); holds the session
//   stall GRANTS              one session: grants GRANTS pages of sim0 BAR2 from page 512, then never
//                             reads its connection again; at SIGTERM it reads what is left in it
//                             (the events the kernel held) and says how many (eventsLeft)
//   flood CONNS MS            CONNS connections at once, each: hello, then open sim1 / grant a page /
//                             release / close the device file in a loop for MS ms
//   midreply WORKERS MS       WORKERS loops: hello, open sim1, a batch of 8 grants, close the socket
//                             at once (the reply and its 8 fds in flight), for MS ms; then holds
//   misuse                    requests before hello, a second hello, an unknown kind, bytes that are
//                             no protobuf, a ticket frame after hello, a batch over its limit, a
//                             grant on a device file never opened, hellos over their limits or
//                             with a resume token that names nothing, a frame over the limit:
//                             what brokerd answered to each
// Holding modes print {"phase":"holding", ...} and wait for SIGTERM. Each mode's last line is its
// result: tallies of "kind:STATUS[:grpc_code]" and the distinct messages of every refusal.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdSocket } from "@vfio-broker/native";
import {
  Attribute,
  FdReplySchema,
  FdRequestSchema,
  Layout,
  Prot,
  WorkloadRequestSchema,
} from "@vfio-broker/proto";
import { brokerClient, codeOf, print } from "../../e2e/agents/raw.js";
import {
  type Received,
  type RequestInit,
  statusName,
  WorkloadClient,
} from "../../e2e/agents/workload-client.js";

const [mode, fdSocket, ...args] = process.argv.slice(2) as [string, string, ...string[]];
const tally: Record<string, number> = {};
const messages = new Set<string>();
const held: { close(): void }[] = [];

/** Counts a reply under `kind` and keeps the message of every refusal; closes any fds it carried. */
function note(kind: string, r: Received | null): string {
  if (!r) {
    tally[`${kind}:closed`] = (tally[`${kind}:closed`] ?? 0) + 1;
    return "closed";
  }
  for (const fd of r.fds) closeFd(fd);
  const s = statusName(r.reply.status);
  const key = `${kind}:${s}${r.reply.grpcCode ? `:${r.reply.grpcCode}` : ""}`;
  tally[key] = (tally[key] ?? 0) + 1;
  if (s !== "OK") messages.add(r.reply.message);
  return s;
}

const done = () => print({ tally, messages: [...messages] });

/** Prints "holding" with what was got, then waits for SIGTERM and exits with the result. */
async function holdUntilTerm(extra: Record<string, unknown> = {}): Promise<never> {
  const term = new Promise<void>((r) => process.once("SIGTERM", () => r()));
  // The fd sockets do not keep the process alive: this does, until SIGTERM.
  const alive = setInterval(() => {}, 1000);
  print({ phase: "holding", tally, ...extra });
  await term;
  clearInterval(alive);
  for (const h of held) h.close();
  done();
  process.exit(0);
}

/** A connection and its hello; the client is held open when the hello was answered OK. */
async function hello(name = "attacker"): Promise<{ c: WorkloadClient; ok: boolean; sessionId: string }> {
  const c = await WorkloadClient.connect(fdSocket);
  const r = await helloOn(c, name);
  const ok = note("hello", r) === "OK";
  held.push(c);
  return { c, ok, sessionId: r?.reply.kind.case === "hello" ? r.reply.kind.value.sessionId : "" };
}

/**
 * The hello's answer on c. A connection brokerd refused (BUSY) may be closed before the hello is
 * written: the send fails, and the refusal is still there to read.
 */
async function helloOn(c: WorkloadClient, name: string): Promise<Received | null> {
  await c
    .sendRaw(encode({ kind: { case: "hello", value: { version: 1, clientName: name } } }))
    .catch(() => {});
  return c.reply().catch(() => null);
}

async function openDevice(c: WorkloadClient, deviceId: string): Promise<bigint | undefined> {
  const r = await c.call({ kind: { case: "openDevice", value: { deviceId, layout: Layout.COMPACT } } });
  note("open", r);
  return r.reply.kind.case === "deviceOpened" ? r.reply.kind.value.deviceFileId : undefined;
}

const grant = (deviceFileId: bigint, regionIndex: number, page: number) => ({
  deviceFileId,
  regionIndex,
  offset: BigInt(page) * 4096n,
  length: 4096n,
  attribute: Attribute.WC,
  prot: Prot.READ_WRITE,
});

async function quota(brokerSocket: string, grpc: number, n: number): Promise<never> {
  for (let i = 0; i < grpc; i++) {
    const rpc = brokerClient(brokerSocket);
    try {
      await rpc.hello({ clientName: "attacker-grpc" });
      tally["grpc-hello:OK"] = (tally["grpc-hello:OK"] ?? 0) + 1;
    } catch (e) {
      tally[`grpc-hello:${codeOf(e)}`] = (tally[`grpc-hello:${codeOf(e)}`] ?? 0) + 1;
    }
    held.push(rpc);
  }
  for (let i = 0; i < n; i++) await hello();
  // With the quota full, a gRPC Hello is refused as well.
  const rpc = brokerClient(brokerSocket);
  try {
    await rpc.hello({ clientName: "attacker-grpc" });
    tally["grpc-hello-after:OK"] = 1;
  } catch (e) {
    tally[`grpc-hello-after:${codeOf(e)}`] = 1;
    messages.add((e as { details?: string }).details ?? "");
  }
  rpc.close();
  // One workload session closed: its slot comes back, and a gRPC Hello gets it (tried until the
  // close has reached brokerd, at most 100 times).
  held.splice(grpc, 1)[0]!.close();
  for (let i = 0; i < 100; i++) {
    const again = brokerClient(brokerSocket);
    const got = await again.hello({ clientName: "attacker-grpc" }).then(
      () => true,
      () => false,
    );
    if (got) {
      tally["grpc-hello-after-close:OK"] = 1;
      held.push(again);
      break;
    }
    again.close();
    await new Promise((r) => setTimeout(r, 50));
  }
  return holdUntilTerm();
}

async function uids(first: number, count: number, per: number): Promise<never> {
  const byUid: Record<number, number> = {};
  for (let u = first; u < first + count; u++) {
    for (let i = 0; i < per; i++) {
      process.seteuid!(u);
      let c: WorkloadClient;
      try {
        c = await WorkloadClient.connect(fdSocket);
      } finally {
        process.seteuid!(0);
      }
      held.push(c);
      const r = await helloOn(c, `uid-${u}`);
      if (note("hello", r) === "OK") byUid[u] = (byUid[u] ?? 0) + 1;
    }
  }
  return holdUntilTerm({ byUid });
}

async function opens(n: number): Promise<never> {
  const { c, ok } = await hello();
  for (let i = 0; ok && i < n; i++) await openDevice(c, "sim1");
  return holdUntilTerm();
}

async function hog(n: number): Promise<never> {
  const { c, ok } = await hello();
  const df = ok ? await openDevice(c, "sim1") : undefined;
  let granted = 0;
  for (let i = 0; df !== undefined && i < n; i++)
    if (note("grant", await c.call({ kind: { case: "grant", value: grant(df, 4, i) } })) === "OK") granted++;
  return holdUntilTerm({ granted });
}

async function stall(grants: number): Promise<never> {
  const { c, ok, sessionId } = await hello();
  const df = ok ? await openDevice(c, "sim0") : undefined;
  const cookies: string[] = [];
  for (let i = 0; df !== undefined && i < grants; i++) {
    const r = await c.call({ kind: { case: "grant", value: grant(df, 2, 512 + i) } });
    note("grant", r);
    if (r.reply.kind.case === "grant") cookies.push(String(r.reply.kind.value.cookie));
  }
  // From here on the connection is never read again: brokerd's events pile up.
  const term = new Promise<void>((r) => process.once("SIGTERM", () => r()));
  const alive = setInterval(() => {}, 1000);
  print({ phase: "holding", tally, sessionId, cookies });
  await term;
  clearInterval(alive);
  // What the kernel held for us when brokerd gave up (it dropped what it held itself).
  let more = true;
  while (more) more = (await c.reply().catch(() => null)) !== null;
  print({ tally, messages: [...messages], eventsLeft: c.events.length });
  process.exit(0);
}

async function flood(conns: number, ms: number): Promise<void> {
  const end = Date.now() + ms;
  await Promise.all(
    Array.from({ length: conns }, async (_, i) => {
      const { c, ok } = await hello();
      while (ok && Date.now() < end) {
        const df = await openDevice(c, "sim1").catch(() => undefined);
        if (df === undefined) break;
        const g = await c.call({ kind: { case: "grant", value: grant(df, 4, i % 1024) } });
        note("grant", g);
        if (g.reply.kind.case === "grant") {
          const cookie = g.reply.kind.value.cookie;
          note("release", await c.call({ kind: { case: "release", value: { deviceFileId: df, cookie } } }));
        }
        note("close", await c.call({ kind: { case: "closeDevice", value: { deviceFileId: df } } }));
      }
      c.close();
    }),
  );
  done();
}

async function midreply(workers: number, ms: number): Promise<never> {
  const end = Date.now() + ms;
  let batches = 0;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      while (Date.now() < end) {
        const c = await WorkloadClient.connect(fdSocket);
        try {
          if (note("hello", await helloOn(c, "midreply")) !== "OK") continue;
          const df = await openDevice(c, "sim1");
          if (df === undefined) continue;
          const grants = Array.from({ length: 8 }, (_, k) => grant(df, 4, (w * 8 + k) % 1024));
          await c.sendRaw(encode({ kind: { case: "batch", value: { grants } } }));
          batches++;
        } finally {
          // Gone before the reply: its 8 fds meet a closed socket, or sit in it as it closes.
          c.close();
        }
      }
    }),
  );
  return holdUntilTerm({ batches });
}

/** Frames on a fresh connection: the answer to each in turn, then whether it is still served. */
async function probe(...frames: Uint8Array[]): Promise<string[]> {
  const c = await WorkloadClient.connect(fdSocket);
  try {
    const out: string[] = [];
    for (const f of frames) {
      await c.sendRaw(f).catch(() => {});
      const r = await c.reply().catch(() => null);
      if (!r) {
        out.push("closed");
        break;
      }
      for (const fd of r.fds) closeFd(fd);
      const k = r.reply.kind;
      out.push(
        `${statusName(r.reply.status)}${r.reply.grpcCode ? `:${r.reply.grpcCode}` : ""}: ${r.reply.message}${k.case === "hello" ? `resumed=${k.value.resumed}` : ""}`,
      );
    }
    // Still served? Another list request must be answered (a closed connection answers nothing).
    await c.sendRaw(encode({ kind: { case: "listDevices", value: {} } })).catch(() => {});
    const again = await c.reply().catch(() => null);
    out.push(again ? "open" : "closed");
    return out;
  } finally {
    c.close();
  }
}

function encode(req: RequestInit): Uint8Array {
  return toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, req));
}

async function misuse(): Promise<void> {
  const helloFrame = encode({ kind: { case: "hello", value: { version: 1, clientName: "misuse" } } });
  const list = encode({ kind: { case: "listDevices", value: {} } });
  const grantFirst = encode({ kind: { case: "grant", value: grant(1n, 4, 0) } });
  // Field 99, length-delimited: a request kind this brokerd does not know.
  const unknownKind = Uint8Array.from([0x9a, 0x06, 0x00]);
  const ticket = toBinary(FdRequestSchema, create(FdRequestSchema, { ticket: "0".repeat(32) }));
  const out = {
    listBeforeHello: await probe(list),
    grantBeforeHello: await probe(grantFirst),
    secondHello: await probe(helloFrame, helloFrame),
    unknownKind: await probe(helloFrame, unknownKind),
    notProtobuf: await probe(helloFrame, Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff])),
    ticketAfterHello: await probe(helloFrame, ticket),
    batchOver: await probe(
      helloFrame,
      encode({
        kind: { case: "batch", value: { grants: Array.from({ length: 33 }, () => grant(1n, 4, 0)) } },
      }),
    ),
    unopenedDevice: await probe(helloFrame, encode({ kind: { case: "grant", value: grant(999n, 4, 0) } })),
    manyCapabilities: await probe(
      encode({
        kind: {
          case: "hello",
          value: { version: 1, capabilities: Array.from({ length: 17 }, (_, i) => `c${i}`) },
        },
      }),
    ),
    unknownResume: await probe(
      encode({ kind: { case: "hello", value: { version: 1, resumeToken: "ab".repeat(16) } } }),
    ),
    badResume: await probe(
      encode({ kind: { case: "hello", value: { version: 1, resumeToken: "XY".repeat(16) } } }),
    ),
    longName: await probe(
      encode({ kind: { case: "hello", value: { version: 1, clientName: "x".repeat(300) } } }),
    ),
    oversize: await probe(helloFrame, new Uint8Array(4000)),
  };
  print(out);
}

async function mute(count: number): Promise<void> {
  const t0 = Date.now();
  const socks = await Promise.all(Array.from({ length: count }, () => FdSocket.connect(fdSocket)));
  const closedAfterMs: number[] = [];
  await Promise.all(
    socks.map(async (s) => {
      const m = await s.recv({ maxBytes: 65536, maxFds: 0 }).catch(() => null);
      if (m) {
        const r = fromBinary(FdReplySchema, m.data);
        note("connect", {
          reply: { status: r.status, grpcCode: r.grpcCode, message: r.message } as never,
          fds: [],
        });
        // Then brokerd closes it.
        await s.recv({ maxBytes: 65536, maxFds: 0 }).catch(() => null);
      } else {
        // Never refused: brokerd closed it when it had idled (the fd channel's idle close).
        closedAfterMs.push(Date.now() - t0);
        note("connect", null);
      }
      s.close();
    }),
  );
  print({
    tally,
    messages: [...messages],
    closedAfterMs: [Math.min(...closedAfterMs), Math.max(...closedAfterMs)],
  });
}

const n = (i: number) => Number(args[i]);
switch (mode) {
  case "quota":
    await quota(args[0]!, n(1), n(2));
    break;
  case "uids":
    await uids(n(0), n(1), n(2));
    break;
  case "silent":
    for (let i = 0; i < n(0); i++) await hello();
    await holdUntilTerm();
    break;
  case "mute":
    await mute(n(0));
    break;
  case "opens":
    await opens(n(0));
    break;
  case "hog":
    await hog(n(0));
    break;
  case "stall":
    await stall(n(0));
    break;
  case "flood":
    await flood(n(0), n(1));
    break;
  case "midreply":
    await midreply(n(0), n(1));
    break;
  case "misuse":
    await misuse();
    break;
  default:
    throw new Error(`unknown mode ${mode}`);
}
process.exit(0);
