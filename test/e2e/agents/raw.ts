// Raw protocol helpers for test agents: a BrokerService client and the fd channel, with no client
// library in between, so tests can do what a misbehaving or foreign client would.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { grpcCodeName } from "@vfio-broker/client";
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

export function brokerClient(socket: string) {
  // Own subchannel: each raw client is its own connection, hence its own session.
  return createClient(BrokerService, `unix:${socket}`, undefined, { "grpc.use_local_subchannel_pool": 1 });
}

/**
 * A raw session with sim0 open (compact layout): the client, Hello's reply, the device file, and
 * page(n): the CreateMapping request for BAR2's page n, 4 KiB WC read-write.
 */
export async function rawSession(socket: string, clientName: string) {
  const rpc = brokerClient(socket);
  const hello = await rpc.hello({ clientName });
  const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
  const page = (n = 0) => ({
    deviceFileId: df.deviceFileId,
    regionIndex: 2,
    offset: BigInt(n) * 4096n,
    length: 4096n,
    attribute: Attribute.WC,
    prot: Prot.READ_WRITE,
  });
  return { rpc, hello, df, page };
}

/** Presents a ticket; returns the reply status name and how many fds arrived (closing them). */
export async function present(
  fdSocket: string,
  ticket: string,
): Promise<{ status: string; fds: number; message: string }> {
  const sock = await FdSocket.connect(fdSocket);
  try {
    await sock.send(toBinary(FdRequestSchema, create(FdRequestSchema, { ticket })));
    const msg = await sock.recv({ maxBytes: 4096, maxFds: 4 });
    if (!msg) throw new Error("fd channel closed without a reply");
    for (const fd of msg.fds) closeFd(fd);
    const reply = fromBinary(FdReplySchema, msg.data);
    return {
      status: FdStatus[reply.status] ?? String(reply.status),
      fds: msg.fds.length,
      message: reply.message,
    };
  } finally {
    sock.close();
  }
}

/** grpc error → its status name. */
export function codeOf(e: unknown): string {
  const code = (e as { code?: number }).code;
  return typeof code === "number" ? grpcCodeName(code) : `not a grpc error: ${String(e)}`;
}

export function print(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x))}\n`);
}
