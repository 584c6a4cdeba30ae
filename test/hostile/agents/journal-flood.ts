// Hostile agent: floods the fd channel with tickets that were never issued (the "unknown" result),
// on `connections` connections for `seconds`, each sending one framed FdRequest and waiting for the
// reply, as fast as brokerd answers. A dropped connection is reopened (and counted), so the agent
// keeps attacking whatever brokerd does. argv: fdSocket seconds connections. Prints a summary.
import { randomBytes } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdSocket } from "@vfio-broker/native";
import { FdReplySchema, FdRequestSchema, FdStatus } from "@vfio-broker/proto";
import { print } from "../../e2e/agents/raw.js";

const [fdSocket, seconds = "10", connections = "4"] = process.argv.slice(2);
const end = Date.now() + Number(seconds) * 1000;
let requests = 0;
let reconnects = 0;
const replies: Record<string, number> = {};
const errors: string[] = [];

async function attack(): Promise<void> {
  while (Date.now() < end) {
    let sock: FdSocket;
    try {
      sock = await FdSocket.connect(fdSocket!);
    } catch (e) {
      if (errors.length < 5) errors.push(`connect: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    try {
      while (Date.now() < end) {
        const frame = toBinary(
          FdRequestSchema,
          create(FdRequestSchema, { ticket: randomBytes(16).toString("hex") }),
        );
        await sock.send(frame);
        requests++;
        const msg = await sock.recv({ maxBytes: 4096, maxFds: 4 });
        if (!msg) break;
        for (const fd of msg.fds) closeFd(fd);
        const status = FdStatus[fromBinary(FdReplySchema, msg.data).status] ?? "?";
        replies[status] = (replies[status] ?? 0) + 1;
      }
    } catch (e) {
      if (errors.length < 5) errors.push((e as Error).message);
    } finally {
      sock.close();
    }
    if (Date.now() < end) reconnects++;
  }
}

await Promise.all(Array.from({ length: Number(connections) }, attack));
print({ requests, replies, reconnects, errors });
