// fd-channel.ts: owns the client side of the fd channel (fdchannel.proto): connect to fd.sock, send
// one framed FdRequest{ticket}, receive one FdReply with exactly one fd (SCM_RIGHTS) when the status
// is OK. It never leaks a received fd: on every failure path (a refusal that still carried fds, a
// truncated or oversize message, a timeout) every fd received is closed before the error is thrown.
// The ticket must be presented by the same process that called CreateMapping.
import { dirname, join } from "node:path";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdSocket, type NativeError } from "@vfio-broker/native";
import {
  type FdGrantSchema,
  type FdReleaseSchema,
  type FdReply,
  FdReplySchema,
  FdRequestSchema,
  FdStatus,
} from "@vfio-broker/proto/messages";
import { BrokerClientError, FdChannelError } from "./errors.js";

/** What an FdRequest may carry: a ticket, or a grant or release of the fast path. */
export type FdRequestInit = MessageInitShape<typeof FdRequestSchema>;

/** An FdReply is small; anything bigger is a protocol error. */
const MAX_REPLY_BYTES = 64 * 1024;
const DEFAULT_TIMEOUT_MS = 10_000;

export interface FetchedFd {
  reply: FdReply;
  /** The backing fd; the caller owns it and must close it (after mmap). -1 for a batch. */
  fd: number;
  /** A batch's fds, one per granted item in order; the caller owns and closes them. */
  fds?: number[];
}

export type FdGrantInit = MessageInitShape<typeof FdGrantSchema>;
export type FdReleaseInit = MessageInitShape<typeof FdReleaseSchema>;

/** One grant of a batch: its reply and fd (the caller closes it), or why it was refused. */
export type GrantResult = { reply: FdReply; fd: number; error?: undefined } | { error: Error };

/**
 * A refused reply (or batch item) as an error: a grant or release refused is the error the gRPC
 * call would have thrown; any other status an FdChannelError, with `fallback` when brokerd gave
 * no message.
 */
export function itemError(
  item: FdReply,
  method: string | undefined,
  fallback = `${method} was refused`,
): Error {
  if (item.status === FdStatus.REFUSED)
    return new BrokerClientError(item.grpcCode || "UNKNOWN", item.message, { method });
  return new FdChannelError(fdStatusName(item.status), item.message || fallback);
}

/** What a reply must carry: one fd (a ticket, a grant), none (a release), or a batch's fds. */
export type Expect = boolean | "batch";

/** Items in one FdBatch (brokerd's MAX_BATCH_ITEMS), hence at most this many fds in its reply. */
export const MAX_BATCH_ITEMS = 32;

export interface FetchFdOptions {
  /** Give up (and close the socket) if no reply arrives within this many milliseconds. Default 10 s. */
  timeoutMs?: number;
  /** The call a refused grant or release is reported as ("CreateMapping", "ReleaseMapping"). */
  method?: string;
}

/** "EXPIRED" for FdStatus.EXPIRED: the enum name without its prefix. */
export function fdStatusName(s: FdStatus): string {
  return FdStatus[s] ?? `STATUS_${s}`;
}

function closeAll(fds: number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
}

/**
 * Presents `ticket` on the fd channel at `fdSocketPath` and returns the reply and the backing fd.
 * Throws FdChannelError: status "EXPIRED", "ALREADY_USED", "WRONG_PEER", ... for a refusal (with the
 * broker's message), "CONNECT" when fd.sock cannot be reached, "PROTOCOL" for a malformed, truncated
 * or fd-less OK reply, "TIMEOUT" when the broker does not answer.
 */
export async function fetchFd(
  fdSocketPath: string,
  ticket: string,
  opts: FetchFdOptions = {},
): Promise<FetchedFd> {
  const sock = await connectFdChannel(fdSocketPath);
  try {
    return await exchange(sock, fdSocketPath, { ticket }, opts);
  } finally {
    sock.close();
  }
}

/**
 * Where to look for the fd channel, in order, given the broker socket this client connected to and
 * what Hello said. The socket directory may be mounted anywhere (a container's bind mount, a CDI
 * spec, a symlink), so the fd socket next to the broker socket comes first, then the path brokerd
 * advertised (its own, host-side path). fdSocketName is "" when brokerd serves the two sockets from
 * different directories, or is older than the field: then the advertised path comes first and
 * "fd.sock" next to the broker socket is the last resort.
 */
export function fdSocketCandidates(
  brokerSocket: string,
  fdSocketName: string,
  fdSocketPath: string,
): string[] {
  const dir = dirname(brokerSocket);
  const sibling = fdSocketName !== "" && !fdSocketName.includes("/") ? join(dir, fdSocketName) : undefined;
  const list = sibling ? [sibling, fdSocketPath] : [fdSocketPath, join(dir, "fd.sock")];
  return [...new Set(list.filter((p) => p !== ""))];
}

/** Connects to the first of `paths` that accepts; the error names every path tried. */
export async function connectFirst(paths: readonly string[]): Promise<{ sock: FdSocket; path: string }> {
  if (paths.length === 1) return { sock: await connectFdChannel(paths[0]!), path: paths[0]! };
  const failures: string[] = [];
  let last: unknown;
  for (const path of paths) {
    try {
      return { sock: await FdSocket.connect(path), path };
    } catch (e) {
      last = e;
      failures.push(`${path}: ${(e as NativeError).code ?? (e as Error).message}`);
    }
  }
  throw new FdChannelError(
    "CONNECT",
    `cannot reach the fd channel (${failures.join("; ")}); is brokerd running, and is its whole socket directory mounted here? (or set VFIO_BROKER_FD_SOCKET)`,
    { cause: last },
  );
}

async function connectFdChannel(fdSocketPath: string): Promise<FdSocket> {
  try {
    return await FdSocket.connect(fdSocketPath);
  } catch (e) {
    const ne = e as NativeError;
    const what =
      ne.code === "ENOENT" || ne.code === "ECONNREFUSED"
        ? `nothing listens at ${fdSocketPath}; is brokerd running?`
        : ne.code === "EACCES"
          ? `permission denied connecting to ${fdSocketPath}; the socket's directory or mode does not let this user in`
          : `cannot connect to ${fdSocketPath}: ${ne.message}`;
    throw new FdChannelError("CONNECT", what, { cause: e });
  }
}

/**
 * One fd-channel connection reused for every fetch of a client (brokerd serves many requests per
 * connection). Reuse saves a connect + accept + credential check per mapping (about 200 µs of the
 * ~1 ms a grant takes here, see BENCHMARKS.md). Requests are pipelined: each is sent at once, and
 * brokerd, which serves a connection's requests in order, answers them in order, so a caller that
 * does not wait for a release's reply does not make the next grant wait for it either. After any
 * protocol error the connection is dropped; a connection brokerd closed while idle is replaced and
 * the request sent once more (brokerd closes only a connection with nothing in flight, so it never
 * read the request and the ticket is unused).
 */
export class FdChannelConnection {
  #sock: FdSocket | undefined;
  #connecting: Promise<FdSocket> | undefined;
  #closed = false;
  #paths: readonly string[];
  /** The fd socket path in use: the first candidate until one accepted, then that one. */
  path: string;

  /** `paths`: one fd socket path, or candidates tried in order (fdSocketCandidates) until one accepts. */
  constructor(paths: string | readonly string[]) {
    this.#paths = typeof paths === "string" ? [paths] : paths;
    if (this.#paths.length === 0) throw new Error("FdChannelConnection: no fd socket path");
    this.path = this.#paths[0]!;
  }

  async #connect(): Promise<FdSocket> {
    const { sock, path } = await connectFirst(this.#paths);
    // Stick to the path that worked (a later reconnect goes straight there).
    if (path !== this.path || this.#paths.length > 1) {
      this.path = path;
      this.#paths = [path];
    }
    return sock;
  }

  /** The open connection, or one connect shared by every request that needs it. */
  #open(): Promise<FdSocket> {
    if (this.#sock) return Promise.resolve(this.#sock);
    this.#connecting ??= this.#connect().then(
      (sock) => {
        this.#connecting = undefined;
        if (this.#closed) {
          sock.close();
          throw new FdChannelError("CONNECT", "the client was closed");
        }
        this.#sock = sock;
        return sock;
      },
      (e) => {
        this.#connecting = undefined;
        throw e;
      },
    );
    return this.#connecting;
  }

  fetch(ticket: string, opts: FetchFdOptions = {}): Promise<FetchedFd> {
    return this.request({ ticket }, opts);
  }

  /**
   * One request on this connection, sent at once (pipelined behind any in flight): a ticket, or a
   * grant (reply with its fd) or release (wantFd false: the reply has none) of the grant fast path.
   */
  async request(req: FdRequestInit, opts: FetchFdOptions = {}, wantFd: Expect = true): Promise<FetchedFd> {
    if (this.#closed) throw new FdChannelError("CONNECT", "the client was closed");
    const reused = this.#sock !== undefined;
    const sock = await this.#open();
    try {
      return await exchange(sock, this.path, req, opts, wantFd);
    } catch (e) {
      const stale = reused && e instanceof FdChannelError && e.status === "PROTOCOL" && isClosedByPeer(e);
      if (!(e instanceof FdChannelError) || e.status === "PROTOCOL" || e.status === "TIMEOUT")
        this.#drop(sock);
      if (!stale) throw e;
      const fresh = await this.#open();
      try {
        return await exchange(fresh, this.path, req, opts, wantFd);
      } catch (e2) {
        if (!(e2 instanceof FdChannelError) || e2.status === "PROTOCOL" || e2.status === "TIMEOUT")
          this.#drop(fresh);
        throw e2;
      }
    }
  }

  /** Drops `sock` if it is still the connection in use (a newer one is left alone). */
  #drop(sock: FdSocket): void {
    sock.close();
    if (this.#sock === sock) this.#sock = undefined;
  }

  close(): void {
    this.#closed = true;
    if (this.#sock) this.#drop(this.#sock);
  }
}

/** The exchange failed because brokerd had already closed the connection (idle timeout). */
export function isClosedByPeer(e: FdChannelError): boolean {
  const code = (e.cause as NativeError | undefined)?.code;
  return e.closedByPeer || code === "EPIPE" || code === "ECONNRESET";
}

/** One FdRequest -> FdReply exchange on a connected socket. */
async function exchange(
  sock: FdSocket,
  fdSocketPath: string,
  request: FdRequestInit,
  opts: FetchFdOptions,
  wantFd: Expect = true,
): Promise<FetchedFd> {
  let timer: NodeJS.Timeout | undefined;
  // The reply is claimed in the same turn as the request is sent, so replies to pipelined requests
  // are matched to them in order.
  const sending = sock.send(toBinary(FdRequestSchema, create(FdRequestSchema, request)));
  // A reply with more fds than expected is refused by the native layer, which closes all of them.
  const receiving = sock.recv({
    maxBytes: MAX_REPLY_BYTES,
    maxFds: wantFd === "batch" ? MAX_BATCH_ITEMS : 1,
  });
  // (If the send fails the connection is dropped and this recv rejects; nobody waits for it then.)
  receiving.catch(() => {});
  try {
    try {
      await sending;
    } catch (e) {
      const ne = e as NativeError;
      throw new FdChannelError(
        "PROTOCOL",
        `sending the ticket failed (${ne.code ?? "error"}: ${ne.message})`,
        {
          cause: e,
        },
      );
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    let msg: Awaited<ReturnType<FdSocket["recv"]>> | "timeout";
    try {
      msg = await Promise.race([receiving, timeout]);
    } catch (e) {
      const ne = e as NativeError;
      throw new FdChannelError(
        "PROTOCOL",
        `the broker's reply could not be received (${ne.code ?? "error"}: ${ne.message}); any fds that came with it were closed`,
        { cause: e },
      );
    }
    if (msg === "timeout")
      throw new FdChannelError("TIMEOUT", `no reply from ${fdSocketPath} within ${timeoutMs} ms`);
    if (msg === null)
      throw new FdChannelError("PROTOCOL", "the broker closed the fd channel without replying", {
        closedByPeer: true,
      });
    let reply: FdReply;
    try {
      reply = fromBinary(FdReplySchema, msg.data);
    } catch (e) {
      closeAll(msg.fds);
      throw new FdChannelError("PROTOCOL", "the broker's reply is not an FdReply protobuf", { cause: e });
    }
    if (reply.status !== FdStatus.OK) {
      closeAll(msg.fds);
      throw itemError(reply, opts.method, "the broker refused the ticket");
    }
    if (wantFd === "batch") {
      const granted = reply.items.filter((i) => i.status === FdStatus.OK && i.length > 0n).length;
      if (msg.fds.length !== granted) {
        closeAll(msg.fds);
        throw new FdChannelError(
          "PROTOCOL",
          `a batch reply must carry one fd per granted item (${granted}), it carried ${msg.fds.length}`,
        );
      }
      return { reply, fd: -1, fds: msg.fds };
    }
    if (!wantFd) {
      closeAll(msg.fds);
      return { reply, fd: -1 };
    }
    if (msg.fds.length !== 1) {
      closeAll(msg.fds);
      throw new FdChannelError(
        "PROTOCOL",
        `an OK reply must carry exactly one fd, it carried ${msg.fds.length}`,
      );
    }
    return { reply, fd: msg.fds[0]! };
  } finally {
    clearTimeout(timer);
  }
}
