// Agent: sends one grant-fast-path request on the fd channel with the given session token, as
// whatever process runs it, and prints {status, code, fds, message}. argv: fdSocket token dfId op
// (op "grant": BAR2 page 0 WC; "release": cookie argv[5]; "batch": an FdBatch of argv[5] such
// grants, pages 0, 1, ...).
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdSocket } from "@vfio-broker/native";
import { Attribute, FdReplySchema, FdRequestSchema, FdStatus, Prot } from "@vfio-broker/proto";
import { print } from "./raw.js";

const [fdSocket, token, dfId, op, cookie = "0"] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string?,
];
const sock = await FdSocket.connect(fdSocket);
const grant = (page: number) => ({
  sessionToken: token,
  deviceFileId: BigInt(dfId),
  regionIndex: 2,
  offset: BigInt(page) * 4096n,
  length: 4096n,
  attribute: Attribute.WC,
  prot: Prot.READ_WRITE,
});
const req =
  op === "release"
    ? { release: { sessionToken: token, deviceFileId: BigInt(dfId), cookie: BigInt(cookie) } }
    : op === "batch"
      ? { batch: { sessionToken: token, grants: Array.from({ length: Number(cookie) }, (_, i) => grant(i)) } }
      : { grant: grant(0) };
await sock.send(toBinary(FdRequestSchema, create(FdRequestSchema, req)));
const msg = await sock.recv({ maxBytes: 4096, maxFds: 4 });
if (!msg) {
  print({ status: "CLOSED", fds: 0 });
} else {
  for (const fd of msg.fds) closeFd(fd);
  const r = fromBinary(FdReplySchema, msg.data);
  print({
    status: FdStatus[r.status],
    code: r.grpcCode,
    fds: msg.fds.length,
    message: r.message,
    cookie: r.cookie,
    items: r.items.length,
  });
}
sock.close();
