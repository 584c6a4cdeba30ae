// workload-channel.ts: owns the client end of one workload-protocol connection
// (proto/vfiobroker/v1/workload.proto) on fd.sock: the hello and its welcome, requests answered in
// order (pipelined: each is sent at once, and brokerd answers a connection's requests one at a
// time, in order), and the events brokerd pushes between replies. The connection IS the session
// and its lease: closing it ends the session. It never leaks a received fd (a refusal, an event or
// a reply with more fds than it may carry: all closed), and reports the connection's end exactly
// once (never after close()). What a reply or an event means for device files and mappings is the
// BrokerClient's job, not this file's.
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { closeFd, type FdSocket, type NativeError } from "@vfio-broker/native";
import {
  FdStatus,
  type WorkloadEvent,
  type WorkloadReply,
  WorkloadReplySchema,
  WorkloadRequestSchema,
  type WorkloadWelcome,
} from "@vfio-broker/proto/messages";
import { BrokerClientError, FdChannelError } from "./errors.js";
import { connectFirst, fdStatusName, MAX_BATCH_ITEMS } from "./fd-channel.js";

/** workload.proto: a reply frame is at most this many bytes, with at most MAX_BATCH_ITEMS fds. */
export const MAX_REPLY_BYTES = 65536;
/** The protocol version this client speaks. */
export const WORKLOAD_VERSION = 1;

/** A request as given to request(): WorkloadRequest's kind, without the hello. */
export type WorkloadCallInit = Exclude<
  NonNullable<MessageInitShape<typeof WorkloadRequestSchema>["kind"]>,
  { case: "hello" | undefined }
>;

export interface WorkloadHandlers {
  /** An event pushed by brokerd (revocation, device health, lease ended). */
  event(e: WorkloadEvent): void;
  /**
   * The connection ended without close() being asked for. endedReason: lease_ended's reason when
   * brokerd said why before closing ("restart": it keeps the session for a resume); undefined when
   * it just closed (brokerd killed or gone).
   */
  closed(error: Error, endedReason: string | undefined): void;
}

interface Pending {
  method: string;
  resolve(r: { reply: WorkloadReply; fds: number[] }): void;
  reject(e: Error): void;
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
}

/** A non-OK reply as an error: a refusal is the error the gRPC call would have thrown. */
function replyError(r: WorkloadReply, method: string): Error {
  if (r.status === FdStatus.REFUSED)
    return new BrokerClientError(r.grpcCode || "UNKNOWN", r.message, { method });
  return new FdChannelError(fdStatusName(r.status), r.message || `${method} was refused`);
}

/** The fds an OK reply must carry: one per grant made (a grant, or a batch's granted items). */
function fdsExpected(r: WorkloadReply): number {
  const k = r.kind;
  if (k.case === "grant") return 1;
  if (k.case === "batch")
    return k.value.items.filter((i) => i.status === FdStatus.OK && i.length > 0n).length;
  return 0;
}

/** The reply kind that answers each request kind. */
const ANSWER: Record<WorkloadCallInit["case"], string> = {
  listDevices: "devices",
  openDevice: "deviceOpened",
  grant: "grant",
  release: "release",
  batch: "batch",
  closeDevice: "deviceClosed",
};

const gone = (cause?: unknown) =>
  new FdChannelError("PROTOCOL", "brokerd closed the workload connection", { cause, closedByPeer: true });

export class WorkloadChannel {
  readonly welcome: WorkloadWelcome;
  /** The fd socket path this connection was made to. */
  readonly path: string;
  readonly #sock: FdSocket;
  readonly #handlers: WorkloadHandlers;
  readonly #pending: Pending[] = [];
  #closed = false;
  #ended: { reason: string; message: string } | undefined;

  private constructor(sock: FdSocket, path: string, welcome: WorkloadWelcome, handlers: WorkloadHandlers) {
    this.#sock = sock;
    this.path = path;
    this.welcome = welcome;
    this.#handlers = handlers;
    void this.#pump();
  }

  /**
   * Connects to the first of `paths` that accepts, says hello and returns the open channel once
   * brokerd welcomed it. Throws FdChannelError "CONNECT" (nothing accepts), "TIMEOUT" (no welcome
   * within timeoutMs), "PROTOCOL" (closed before welcoming: brokerd handing over, or a bad frame),
   * another FdStatus name, or the BrokerClientError of a refused hello (the sessions quota:
   * RESOURCE_EXHAUSTED; a resume refused).
   */
  static async open(
    paths: readonly string[],
    hello: { clientName: string; resumeToken?: string },
    handlers: WorkloadHandlers,
    timeoutMs: number,
  ): Promise<WorkloadChannel> {
    const { sock, path } = await connectFirst(paths);
    let timer: NodeJS.Timeout | undefined;
    try {
      const frame = create(WorkloadRequestSchema, {
        kind: {
          case: "hello",
          value: {
            version: WORKLOAD_VERSION,
            capabilities: ["events", "batch", "resume"],
            clientName: hello.clientName,
            resumeToken: hello.resumeToken ?? "",
          },
        },
      });
      const receiving = sock.recv({ maxBytes: MAX_REPLY_BYTES, maxFds: 0 });
      receiving.catch(() => {});
      await sock.send(toBinary(WorkloadRequestSchema, frame));
      const timeout = new Promise<"timeout">((r) => {
        timer = setTimeout(() => r("timeout"), timeoutMs);
      });
      const msg = await Promise.race([receiving, timeout]);
      if (msg === "timeout")
        throw new FdChannelError("TIMEOUT", `no welcome from ${path} within ${timeoutMs} ms`);
      if (msg === null) throw gone();
      const reply = fromBinary(WorkloadReplySchema, msg.data);
      if (reply.status !== FdStatus.OK) throw replyError(reply, "Hello");
      if (reply.kind.case !== "hello")
        throw new FdChannelError("PROTOCOL", `brokerd answered the hello with ${reply.kind.case}`);
      return new WorkloadChannel(sock, path, reply.kind.value, handlers);
    } catch (e) {
      sock.close();
      if (e instanceof BrokerClientError || e instanceof FdChannelError) throw e;
      // ECLOSED: the send failed because the recv had already seen the reset, and closed the socket.
      const code = (e as NativeError).code;
      throw code === "EPIPE" || code === "ECONNRESET" || code === "ECLOSED"
        ? gone(e)
        : new FdChannelError("PROTOCOL", `the hello failed: ${(e as Error).message}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }

  /** The connection is open (the session and its lease live). */
  get open(): boolean {
    return !this.#closed;
  }

  /**
   * One request, sent at once (pipelined behind any in flight), and its reply of the same kind.
   * The caller owns the reply's fds (a grant's one, a batch's one per granted item).
   */
  request(kind: WorkloadCallInit, method: string): Promise<{ reply: WorkloadReply; fds: number[] }> {
    if (this.#closed) return Promise.reject(this.#endError());
    const bytes = toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, { kind }));
    const answered = new Promise<{ reply: WorkloadReply; fds: number[] }>((resolve, reject) =>
      this.#pending.push({ method, resolve, reject }),
    );
    this.#sock.send(bytes).catch((e: unknown) => this.#fail(gone(e)));
    return answered.then(({ reply, fds }) => {
      if (reply.status !== FdStatus.OK) {
        closeAll(fds);
        throw replyError(reply, method);
      }
      const want = fdsExpected(reply);
      if (reply.kind.case !== ANSWER[kind.case] || fds.length !== want) {
        closeAll(fds);
        throw new FdChannelError(
          "PROTOCOL",
          `${method}: brokerd answered with ${reply.kind.case} carrying ${fds.length} fds (expected ${ANSWER[kind.case]} with ${want})`,
        );
      }
      return { reply, fds };
    });
  }

  /** Ends the connection, and with it the session (brokerd releases everything it held). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sock.close();
    const e = new FdChannelError("CONNECT", "the client was closed");
    for (const p of this.#pending.splice(0)) p.reject(e);
  }

  /** What a request gets once the connection ended: "session ended" (no resume) or "brokerd gone". */
  #endError(cause?: unknown): Error {
    const ended = this.#ended;
    if (ended && ended.reason !== "restart")
      return new BrokerClientError(
        "UNAVAILABLE",
        `this session has ended (${ended.reason})${ended.message ? `: ${ended.message}` : ""}; connect() again`,
      );
    return gone(cause);
  }

  #fail(cause: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sock.close();
    const e = this.#endError(cause);
    for (const p of this.#pending.splice(0)) p.reject(e);
    this.#handlers.closed(e, this.#ended?.reason);
  }

  /** Reads every frame: events go to the handler, anything else answers the oldest request. */
  async #pump(): Promise<void> {
    while (!this.#closed) {
      let msg: Awaited<ReturnType<FdSocket["recv"]>>;
      try {
        msg = await this.#sock.recv({ maxBytes: MAX_REPLY_BYTES, maxFds: MAX_BATCH_ITEMS });
      } catch (e) {
        this.#fail(e);
        return;
      }
      if (msg === null) {
        this.#fail(undefined);
        return;
      }
      let reply: WorkloadReply;
      try {
        reply = fromBinary(WorkloadReplySchema, msg.data);
      } catch (e) {
        closeAll(msg.fds);
        this.#fail(new FdChannelError("PROTOCOL", "a frame is not a WorkloadReply protobuf", { cause: e }));
        return;
      }
      if (reply.kind.case === "event") {
        closeAll(msg.fds);
        const ev = reply.kind.value;
        if (ev.kind.case === "leaseEnded") this.#ended = ev.kind.value;
        this.#handlers.event(ev);
        continue;
      }
      const p = this.#pending.shift();
      if (!p) {
        closeAll(msg.fds);
        this.#fail(new FdChannelError("PROTOCOL", "brokerd sent a reply to no request"));
        return;
      }
      p.resolve({ reply, fds: msg.fds });
    }
  }
}
