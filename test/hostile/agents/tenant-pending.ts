// Attacker agent, run as root, playing COUNT uids from FIRST on: each uid keeps PER mappings
// waiting for their fd (CreateMapping, never fetched), on one session of its own, as that uid; its
// other sessions and its fd-channel connections are held by hold-as-uids.py. The session's socket
// is connected with the process's effective uid set to that uid (the kernel records it at
// connect(2) for SO_PEERCRED), once per uid and again only when brokerd refused or closed it: run
// with --v8-pool-size=0, since glibc's seteuid stops every thread of the process. gRPC calls go
// over a raw HTTP/2 session on that socket. Mappings are topped up every PERIOD_MS as their
// tickets expire. Until SIGTERM; prints {"phase":"opened"} once every uid has its session and
// device file (or after OPEN_MS), {"phase":"filled"} once every uid created its PER or was
// refused (or FILL_MS after "opened"), then {uids, attempts, pendingCreated, refusals (messages
// with their figures as N), rssMB}.
import { type ClientHttp2Session, connect as h2connect } from "node:http2";
import { connect } from "node:net";
import { create, type DescMessage, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import {
  Attribute,
  CreateMappingRequestSchema,
  CreateMappingResponseSchema,
  Layout,
  OpenDeviceRequestSchema,
  OpenDeviceResponseSchema,
  Prot,
} from "@vfio-broker/proto";

const [socket, firstArg = "60000", countArg = "20", perArg = "64"] = process.argv.slice(2);
const FIRST = Number(firstArg);
const COUNT = Number(countArg);
const PER = Number(perArg);
const PERIOD_MS = 500;
const FILL_MS = 30_000;
const OPEN_MS = 10_000;
let opened = 0;
let saidOpened = false;
let saidFilled = false;
/** uids that created their PER or were refused: they have what brokerd gives. */
const saturated = new Set<number>();
function sayFilled(): void {
  if (saidFilled) return;
  saidFilled = true;
  process.stdout.write(`${JSON.stringify({ phase: "filled" })}\n`);
}
function saturate(uid: number): void {
  saturated.add(uid);
  if (saidOpened && saturated.size === COUNT) sayFilled();
}
function sayOpened(): void {
  if (saidOpened) return;
  saidOpened = true;
  process.stdout.write(`${JSON.stringify({ phase: "opened" })}\n`);
  if (saturated.size === COUNT) sayFilled();
  setTimeout(sayFilled, FILL_MS).unref();
}

let stopping = false;
const attempts = { sessions: 0, pending: 0 };
const refusals = new Map<string, number>();
const examples: string[] = [];
let pendingOk = 0;

function refused(msg: string): void {
  // Figures in messages vary; the shape is what the test looks at (the first one of each shape
  // is kept whole, as an example).
  const key = msg.replace(/\d+/g, "N").slice(0, 240);
  if (!refusals.has(key) && refusals.size < 12) examples.push(msg.slice(0, 400));
  if (refusals.has(key) || refusals.size < 12) refusals.set(key, (refusals.get(key) ?? 0) + 1);
}

/** Runs fn (which connects sockets) as uid: SO_PEERCRED then says uid (the gid stays 0, which no rule here names). */
function asUid<T>(uid: number, fn: () => T): T {
  process.seteuid!(uid);
  try {
    return fn();
  } finally {
    process.seteuid!(0);
  }
}

/** One gRPC unary call over a raw HTTP/2 session: {code, message, reply}. */
function unary<I extends DescMessage, O extends DescMessage>(
  h2: ClientHttp2Session,
  method: string,
  inSchema: I,
  outSchema: O,
  msg: MessageInitShape<I>,
): Promise<{ code: number; message: string; reply?: ReturnType<typeof fromBinary<O>> }> {
  return new Promise((resolve) => {
    const body = toBinary(inSchema, create(inSchema, msg));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    let req: ReturnType<ClientHttp2Session["request"]>;
    try {
      req = h2.request({
        ":method": "POST",
        ":path": `/vfiobroker.v1.BrokerService/${method}`,
        "content-type": "application/grpc",
        te: "trailers",
      });
    } catch (e) {
      resolve({ code: 14, message: (e as Error).message });
      return;
    }
    const chunks: Buffer[] = [];
    let status: { code: number; message: string } | undefined;
    const take = (h: Record<string, unknown>) => {
      if (h["grpc-status"] !== undefined)
        status = {
          code: Number(h["grpc-status"]),
          message: decodeURIComponent(String(h["grpc-message"] ?? "")),
        };
    };
    req.on("response", take);
    req.on("trailers", take);
    req.on("data", (d: Buffer) => chunks.push(d));
    req.on("error", (e) => resolve({ code: 14, message: e.message }));
    req.on("close", () => {
      const st = status ?? {
        code: 14,
        message: "closed with no status (a refused connection past its tenant's few)",
      };
      const all = Buffer.concat(chunks);
      if (st.code !== 0 || all.length < 5) return resolve(st);
      resolve({ ...st, reply: fromBinary(outSchema, all.subarray(5, 5 + all.readUInt32BE(1))) });
    });
    req.setTimeout(5000, () => req.close());
    req.end(frame);
  });
}

/** One session of uid that keeps PER mappings waiting for their fd (never fetched). */
async function hoardPending(uid: number): Promise<void> {
  let page = 0;
  while (!stopping) {
    const h2 = h2connect("http://localhost", { createConnection: () => asUid(uid, () => connect(socket!)) });
    h2.on("error", () => {});
    attempts.sessions++;
    const df = await unary(h2, "OpenDevice", OpenDeviceRequestSchema, OpenDeviceResponseSchema, {
      deviceId: "sim0",
      layout: Layout.COMPACT,
    });
    if (df.code !== 0 || !df.reply) {
      refused(df.message);
      h2.destroy();
      await new Promise((r) => setTimeout(r, PERIOD_MS * 4));
      continue;
    }
    if (++opened === COUNT) sayOpened();
    while (!stopping && !h2.destroyed) {
      // Tickets expire after 10 s and their mappings end: keep creating up to the quota.
      for (let i = 0; i < PER && !stopping; i++) {
        attempts.pending++;
        const r = await unary(h2, "CreateMapping", CreateMappingRequestSchema, CreateMappingResponseSchema, {
          deviceFileId: df.reply.deviceFileId,
          regionIndex: 2,
          offset: BigInt(page++ % 4096) * 4096n,
          length: 4096n,
          attribute: Attribute.WC,
          prot: Prot.READ_WRITE,
        });
        if (r.code === 0) {
          pendingOk++;
          if (i === PER - 1) saturate(uid);
          continue;
        }
        refused(r.message);
        saturate(uid);
        break;
      }
      await new Promise((r) => setTimeout(r, PERIOD_MS * 4));
    }
    h2.destroy();
  }
}

process.once("SIGTERM", () => {
  stopping = true;
});
for (let k = 0; k < COUNT; k++) {
  const uid = FIRST + k;
  void hoardPending(uid);
}
setTimeout(sayOpened, OPEN_MS);
await new Promise<void>((resolve) => {
  const t = setInterval(() => {
    if (stopping) {
      clearInterval(t);
      resolve();
    }
  }, 50);
});
process.stdout.write(
  `${JSON.stringify({
    uids: COUNT,
    attempts,
    pendingCreated: pendingOk,
    refusals: Object.fromEntries(refusals),
    examples,
    rssMB: Math.round(process.memoryUsage().rss / 1048576),
  })}\n`,
);
process.exit(0);
