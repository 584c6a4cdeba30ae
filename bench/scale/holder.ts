// Agent for bench/scale: with "sessions N", holds N idle connections on broker.sock (each is a
// session in brokerd); with "mappings N", grants N mappings of sim0 BAR2 WC through the fd channel
// fast path and closes each fd at once (brokerd keeps them booked as delivered; this process maps
// nothing). Prints {ready, pid, ...} and holds until killed. argv: socket what N
import { connect as netConnect, type Socket } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { connect } from "@vfio-broker/client";
import { closeFd, FdSocket } from "@vfio-broker/native";
import {
  Attribute,
  BrokerService,
  createClient,
  FdReplySchema,
  FdRequestSchema,
  FdStatus,
  Layout,
  Prot,
} from "@vfio-broker/proto";

const [socket, what, nArg] = process.argv.slice(2) as [string, string, string];
const N = Number(nArg);
const held: Socket[] = [];
if (what === "sessions") {
  const once = () =>
    new Promise<Socket>((resolve, reject) => {
      const s = netConnect(socket, () => resolve(s));
      s.once("error", reject);
    });
  for (let i = 0; i < N; i++) {
    for (;;) {
      try {
        held.push(await once());
        break;
      } catch (e) {
        // The accept queue is full for a moment (brokerd admits each connection with /proc reads).
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }
  console.log(JSON.stringify({ ready: true, pid: process.pid, sessions: held.length }));
} else {
  const rpc = createClient(BrokerService, `unix:${socket}`, undefined, {
    "grpc.use_local_subchannel_pool": 1,
  });
  const hello = await rpc.hello({ clientName: "scale" });
  const c = await connect({ socket, lease: false, transport: "grpc" });
  const fdSock = await FdSocket.connect(c.fdSocketPath);
  let made = 0;
  const t0 = performance.now();
  // 1000 mappings per device file (its cookie space and the per-file tree stay realistic).
  while (made < N) {
    const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
    for (let k = 0; k < 1000 && made < N; k++, made++) {
      const req = create(FdRequestSchema, {
        grant: {
          sessionToken: hello.resumeToken,
          deviceFileId: df.deviceFileId,
          regionIndex: 2,
          offset: BigInt(k % 4096) * 4096n,
          length: 4096n,
          attribute: Attribute.WC,
          prot: Prot.READ_WRITE,
        },
      });
      await fdSock.send(toBinary(FdRequestSchema, req));
      const msg = await fdSock.recv({ maxBytes: 4096, maxFds: 1 });
      if (!msg) throw new Error("fd channel closed");
      for (const fd of msg.fds) closeFd(fd);
      const r = fromBinary(FdReplySchema, msg.data);
      if (r.status !== FdStatus.OK) throw new Error(`grant ${made}: ${r.grpcCode} ${r.message}`);
    }
  }
  console.log(
    JSON.stringify({
      ready: true,
      pid: process.pid,
      mappings: made,
      grantsPerS: Math.round(made / ((performance.now() - t0) / 1000)),
    }),
  );
  void c;
}
setInterval(() => {}, 1 << 30);
