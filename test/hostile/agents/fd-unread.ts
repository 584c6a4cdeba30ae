// Hostile agent: FdBatch grants pipelined on the fd channel whose replies are never read (issue 18
// row 4). Each of `sessions` sessions (Hello + OpenDevice sim0) opens `connections` fd-channel
// connections and sends, on each, batch after batch of 16 grants of BAR2 pages 0..15 with the same
// 16 request ids: the first batch creates the mappings, every later one is a retry that brings a
// fresh fd for the same cookie, so no quota ever runs out. Nothing is read. A connection brokerd
// closes is kept open (its unread replies, fds included, stay in its receive queue) and a new one
// is opened in its place. argv: brokerSocket fdSocket seconds sessions connections. Prints
// {phase:"holding"} when the time is up (it keeps everything until SIGTERM), then a summary.
import { create, toBinary } from "@bufbuild/protobuf";
import { FdSocket } from "@vfio-broker/native";
import { FdRequestSchema } from "@vfio-broker/proto";
import { print, rawSession } from "../../e2e/agents/raw.js";

const [socket, fdSocket, seconds = "10", sessionsArg = "4", connectionsArg = "16"] = process.argv.slice(2);
const end = Date.now() + Number(seconds) * 1000;
let batches = 0;
let reconnects = 0;
const errors: string[] = [];
/** Every socket ever opened: none is closed before SIGTERM, so unread replies stay where they are. */
const kept: FdSocket[] = [];

async function attack(token: string, dfId: bigint, slot: number): Promise<void> {
  const grants = Array.from({ length: 16 }, (_, i) => ({
    sessionToken: token,
    deviceFileId: dfId,
    regionIndex: 2,
    offset: BigInt(i) * 4096n,
    length: 4096n,
    attribute: 2, // WC
    prot: 2, // read-write
    requestId: `unread-${slot}-${i}`,
  }));
  const frame = toBinary(
    FdRequestSchema,
    create(FdRequestSchema, { batch: { sessionToken: token, grants } }),
  );
  while (Date.now() < end) {
    let sock: FdSocket;
    try {
      sock = await FdSocket.connect(fdSocket!);
    } catch (e) {
      if (errors.length < 5) errors.push(`connect: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    kept.push(sock);
    try {
      while (Date.now() < end) {
        // Resolves once the bytes are in the kernel; stalls when brokerd stops reading.
        const sent = await Promise.race([
          sock.send(frame).then(() => true),
          new Promise<false>((r) => setTimeout(() => r(false), Math.max(1, end - Date.now()))),
        ]);
        if (!sent) break;
        batches++;
      }
    } catch (e) {
      if (errors.length < 5) errors.push((e as Error).message.slice(0, 160));
    }
    if (Date.now() < end) reconnects++;
  }
}

const sessions = await Promise.all(
  Array.from({ length: Number(sessionsArg) }, async (_, k) => {
    const s = await rawSession(socket!, `unread-${k}`);
    return { token: s.hello.resumeToken, dfId: s.df.deviceFileId, rpc: s.rpc, k };
  }),
);
await Promise.all(
  sessions.flatMap((s) => Array.from({ length: Number(connectionsArg) }, () => attack(s.token, s.dfId, s.k))),
);
print({ phase: "holding", batches, reconnects, sockets: kept.length });
process.on("SIGTERM", () => {
  for (const s of kept) s.close();
  for (const s of sessions) s.rpc.close();
  print({ batches, reconnects, sockets: kept.length, errors });
  process.exit(0);
});
setInterval(() => {}, 60_000);
