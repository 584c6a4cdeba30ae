// Hostile agent: FdBatch grant/release churn by one uid (issue 18 row 11), every step allowed by
// the policy: `sessions` sessions, each on its own fd-channel connection, sending batches of 16
// grants (BAR2 pages 0..15, WC) that also release the 16 mappings of the batch before, reading each
// reply, as fast as brokerd answers. Every grant and release is a success the journal records.
// argv: brokerSocket fdSocket seconds sessions. Prints {batches, grants, releases, errors}.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdSocket } from "@vfio-broker/native";
import { FdReplySchema, FdRequestSchema, FdStatus } from "@vfio-broker/proto";
import { print, rawSession } from "../../e2e/agents/raw.js";

const [socket, fdSocket, seconds = "10", sessionsArg = "2"] = process.argv.slice(2);
const end = Date.now() + Number(seconds) * 1000;
let batches = 0;
let grants = 0;
let releases = 0;
const errors: string[] = [];

async function churn(k: number): Promise<void> {
  const s = await rawSession(socket!, `churn-${k}`);
  const token = s.hello.resumeToken;
  const sock = await FdSocket.connect(fdSocket!);
  let held: bigint[] = [];
  try {
    while (Date.now() < end) {
      const req = {
        batch: {
          sessionToken: token,
          releases: held.map((cookie) => ({ sessionToken: token, deviceFileId: s.df.deviceFileId, cookie })),
          grants: Array.from({ length: 16 }, (_, i) => ({ ...s.page(i), sessionToken: token })),
        },
      };
      await sock.send(toBinary(FdRequestSchema, create(FdRequestSchema, req)));
      const m = await sock.recv({ maxBytes: 16384, maxFds: 32 });
      if (!m) throw new Error("brokerd closed the fd channel");
      for (const fd of m.fds) closeFd(fd);
      const r = fromBinary(FdReplySchema, m.data);
      batches++;
      const items = r.items;
      releases += items.slice(0, held.length).filter((i) => i.status === FdStatus.OK).length;
      const granted = items.slice(held.length).filter((i) => i.status === FdStatus.OK);
      grants += granted.length;
      held = granted.map((i) => i.cookie);
    }
  } catch (e) {
    if (errors.length < 5) errors.push((e as Error).message.slice(0, 160));
  } finally {
    sock.close();
    s.rpc.close();
  }
}

await Promise.all(Array.from({ length: Number(sessionsArg) }, (_, k) => churn(k)));
print({ batches, grants, releases, errors });
process.exit(0);
