// A raw workload-protocol client for tests (proto/vfiobroker/v1/workload.proto): frames over the
// fd channel's socket with no client library in between, so tests can speak it exactly, or badly.
// Replies come back in order; events pushed between them are queued apart.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FdSocket } from "@vfio-broker/native";
import {
  FdStatus,
  type WorkloadEvent,
  type WorkloadHelloSchema,
  type WorkloadReply,
  WorkloadReplySchema,
  WorkloadRequestSchema,
} from "@vfio-broker/proto";

export type RequestInit = MessageInitShape<typeof WorkloadRequestSchema>;

export interface Received {
  reply: WorkloadReply;
  fds: number[];
}

export class WorkloadClient {
  readonly events: WorkloadEvent[] = [];

  private constructor(readonly sock: FdSocket) {}

  static async connect(path: string): Promise<WorkloadClient> {
    return new WorkloadClient(await FdSocket.connect(path));
  }

  /** Sends raw bytes as one frame. */
  sendRaw(bytes: Uint8Array): Promise<void> {
    return this.sock.send(bytes);
  }

  /** The next frame that is not an event (events met on the way are queued); null: closed. */
  async reply(): Promise<Received | null> {
    for (;;) {
      const msg = await this.sock.recv({ maxBytes: 65536, maxFds: 32 });
      if (!msg) return null;
      const reply = fromBinary(WorkloadReplySchema, msg.data);
      if (reply.kind.case === "event") this.events.push(reply.kind.value);
      else return { reply, fds: msg.fds };
    }
  }

  /** One request and its reply (throws if the connection closed instead). */
  async call(req: RequestInit): Promise<Received> {
    await this.sock.send(toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, req)));
    const r = await this.reply();
    if (!r) throw new Error("the workload connection closed without a reply");
    return r;
  }

  /** The next event (queued, or the next frame, which must be one); null: closed. */
  async event(): Promise<WorkloadEvent | null> {
    const queued = this.events.shift();
    if (queued) return queued;
    const msg = await this.sock.recv({ maxBytes: 65536, maxFds: 0 });
    if (!msg) return null;
    const reply = fromBinary(WorkloadReplySchema, msg.data);
    if (reply.kind.case !== "event") throw new Error(`expected an event, got ${reply.kind.case}`);
    return reply.kind.value;
  }

  hello(extra: MessageInitShape<typeof WorkloadHelloSchema> = {}): Promise<Received> {
    return this.call({ kind: { case: "hello", value: { version: 1, clientName: "test", ...extra } } });
  }

  close(): void {
    this.sock.close();
  }
}

export const statusName = (s: FdStatus): string => FdStatus[s] ?? String(s);
