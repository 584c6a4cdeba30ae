// Test support: a minimal vfio-broker client on the raw API (BrokerService over gRPC + the fd
// channel + a Lease stream), for the observability and console tests until they can use
// @vfio-broker/client. It does what a real client does: Hello, OpenDevice, CreateMapping, redeem
// the ticket on the fd channel (receiving the backing fd), keep the lease alive, collect the
// revocations it carries and acknowledge each (ReleaseMapping / CloseDevice: it never mmaps).
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdSocket } from "@vfio-broker/native";
import {
  Attribute,
  BrokerService,
  createClient,
  FdReplySchema,
  FdRequestSchema,
  FdStatus,
  Layout,
  type PromiseClient,
  Prot,
} from "@vfio-broker/proto";

export interface Revocation {
  deviceFileId: bigint;
  cookie: bigint;
  deviceId: string;
  reason: string;
  message: string;
}

export interface HeldMapping {
  deviceFileId: bigint;
  cookie: bigint;
  effectiveAttribute: Attribute;
}

export class RawClient {
  readonly revocations: Revocation[] = [];
  private keepalive: NodeJS.Timeout | undefined;
  private fds: number[] = [];
  private lease: ReturnType<PromiseClient<typeof BrokerService>["lease"]> | undefined;

  private constructor(
    readonly grpc: PromiseClient<typeof BrokerService>,
    readonly fdSocketPath: string,
    readonly sessionId: string,
  ) {}

  static async connect(socket: string, fdSocket: string): Promise<RawClient> {
    // Its own connection (= its own brokerd session): grpc-js otherwise shares one connection
    // between every client of the same target in a process.
    const grpc = createClient(BrokerService, `unix:${socket}`, undefined, {
      "grpc.use_local_subchannel_pool": 1,
    });
    const hello = await grpc.hello(
      { clientName: "observability-test", clientVersion: "0" },
      { timeoutMs: 5000 },
    );
    const c = new RawClient(grpc, fdSocket, hello.sessionId);
    c.startLease();
    return c;
  }

  private startLease(): void {
    const lease = this.grpc.lease();
    this.lease = lease;
    let seq = 0n;
    lease.send({ kind: { case: "keepalive", value: { sequence: seq++ } } });
    lease.call.on("data", (r: { kind: { case: string; value: unknown } }) => {
      if (r.kind.case === "granted") {
        const ms = (r.kind.value as { keepaliveIntervalMs: number }).keepaliveIntervalMs || 1000;
        this.keepalive = setInterval(
          () => lease.send({ kind: { case: "keepalive", value: { sequence: seq++ } } }),
          ms,
        );
      }
      if (r.kind.case === "revocation") {
        const v = r.kind.value as Revocation;
        this.revocations.push(v);
        // It maps nothing itself: it tells brokerd at once, which frees the pages it keeps booked.
        const ack =
          v.cookie === 0n
            ? this.grpc.closeDevice({ deviceFileId: v.deviceFileId })
            : this.grpc.releaseMapping({ deviceFileId: v.deviceFileId, cookie: v.cookie });
        ack.catch(() => {});
      }
    });
    lease.call.on("error", () => {});
  }

  /** Opens `deviceId`, maps `regionName` (e.g. "BAR2") and takes delivery of the backing fd. */
  async map(deviceId: string, regionName: string, length: bigint, attr: "uc" | "wc"): Promise<HeldMapping> {
    const open = await this.grpc.openDevice({ deviceId, layout: Layout.COMPACT }, { timeoutMs: 5000 });
    const region = open.regions.find((r) => r.region?.name === regionName)?.region;
    if (!region) throw new Error(`${deviceId} has no ${regionName}`);
    const created = await this.grpc.createMapping(
      {
        deviceFileId: open.deviceFileId,
        regionIndex: region.index,
        offset: 0n,
        length,
        attribute: attr === "wc" ? Attribute.WC : Attribute.UC,
        prot: Prot.READ_WRITE,
      },
      { timeoutMs: 5000 },
    );
    const sock = await FdSocket.connect(this.fdSocketPath);
    try {
      await sock.send(toBinary(FdRequestSchema, create(FdRequestSchema, { ticket: created.ticket })));
      const msg = await sock.recv();
      if (!msg) throw new Error("fd channel closed without a reply");
      this.fds.push(...msg.fds);
      const reply = fromBinary(FdReplySchema, msg.data);
      if (reply.status !== FdStatus.OK)
        throw new Error(`fd delivery failed: ${FdStatus[reply.status]} ${reply.message}`);
      if (msg.fds.length !== 1) throw new Error(`expected one fd, got ${msg.fds.length}`);
    } finally {
      sock.close();
    }
    const m = created.mapping!;
    return { deviceFileId: open.deviceFileId, cookie: m.cookie, effectiveAttribute: m.effectiveAttribute };
  }

  close(): void {
    clearInterval(this.keepalive);
    try {
      this.lease?.call.end();
    } catch {
      // already gone
    }
    for (const fd of this.fds.splice(0)) {
      try {
        closeFd(fd);
      } catch {
        // already closed
      }
    }
    this.grpc.close();
  }
}
