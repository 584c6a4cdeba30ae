// workload-connect.ts: owns how a workload-protocol client reaches brokerd: which transport a
// connect() uses (option, $VFIO_BROKER_TRANSPORT), where fd.sock is without asking gRPC (beside the
// broker socket, or beside what it links to), the gRPC Hello asked only when it is found nowhere
// there (brokerd's advertised path), and the resume's reconnect loop (backoff until brokerd is back
// or the deadline). It keeps no state and never decides what a welcome means for the session.
import { realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { BrokerClientError, FdChannelError, toClientError } from "./errors.js";
import { fdSocketCandidates } from "./fd-channel.js";
import { backoffMs, brokerdGone, isRestart, sleep } from "./resume.js";
import { WorkloadChannel, type WorkloadHandlers } from "./workload-channel.js";

export type Transport = "workload" | "grpc";

/**
 * The transport a connect() uses: the option; else $VFIO_BROKER_TRANSPORT ("workload" or "grpc");
 * else "workload". `fdGrants: false` ("always gRPC") means "grpc".
 */
export function chooseTransport(opts: { transport?: Transport; fdGrants?: boolean }): Transport {
  if (opts.fdGrants === false) return "grpc";
  const t = opts.transport ?? process.env.VFIO_BROKER_TRANSPORT ?? "workload";
  if (t !== "workload" && t !== "grpc")
    throw new RangeError(`transport must be "workload" or "grpc", got ${JSON.stringify(t)}`);
  return t;
}

/**
 * Where fd.sock is, found without brokerd's help: the explicit path (option, then
 * $VFIO_BROKER_FD_SOCKET), else "fd.sock" beside the broker socket (wherever its directory is
 * mounted), then beside the file the broker socket links to.
 */
export function localCandidates(socket: string, explicit: string | undefined): string[] {
  if (explicit) return [explicit];
  const list = [join(dirname(socket), "fd.sock")];
  try {
    list.push(join(dirname(realpathSync(socket)), "fd.sock"));
  } catch {
    // not resolvable here: the first candidate only
  }
  return [...new Set(list)];
}

/** Asks brokerd's gRPC Hello where its fd socket is, ending that session at once. */
async function advertised(socket: string, timeoutMs: number): Promise<string[]> {
  const { brokerChannel } = await import("./grpc-channel.js"); // grpc-js: only when it is needed
  const rpc = brokerChannel(socket);
  try {
    const hello = await rpc.hello({ clientName: "vfio-broker-node (fd.sock lookup)" }, { timeoutMs });
    const c = hello.capabilities;
    return fdSocketCandidates(socket, c?.fdSocketName ?? "", c?.fdSocketPath ?? "");
  } catch (e) {
    const err = toClientError(e, "Hello");
    if (err instanceof BrokerClientError && err.code === "UNAVAILABLE") {
      const errno = /connect (E[A-Z]+)/.exec(err.details)?.[1];
      const why =
        errno === "ECONNREFUSED"
          ? "connect ECONNREFUSED: a stale socket file, nothing accepts on it"
          : err.details;
      throw new BrokerClientError("UNAVAILABLE", `brokerd is not answering at ${socket} (${why})`, {
        method: "Hello",
        cause: e,
      });
    }
    throw err;
  } finally {
    rpc.close();
  }
}

/**
 * The first workload connection of a client: to the local candidates, else (when no fd.sock is
 * found there and none was named) to the path brokerd's gRPC Hello advertises.
 */
export async function openWorkload(
  socket: string,
  explicit: string | undefined,
  clientName: string,
  handlers: WorkloadHandlers,
  timeoutMs: number,
): Promise<WorkloadChannel> {
  const local = localCandidates(socket, explicit);
  try {
    return await WorkloadChannel.open(local, { clientName }, handlers, timeoutMs);
  } catch (e) {
    if (explicit || !(e instanceof FdChannelError && e.status === "CONNECT")) throw e;
    const more = (await advertised(socket, timeoutMs)).filter((p) => !local.includes(p));
    if (more.length === 0) throw e;
    return WorkloadChannel.open(more, { clientName }, handlers, timeoutMs);
  }
}

/** brokerd is not (yet) back: try again after a backoff. */
function notBackYet(e: unknown): boolean {
  if (e instanceof FdChannelError) return e.status === "TIMEOUT" || e.status === "BUSY" || brokerdGone(e);
  return isRestart(e);
}

/**
 * A resume's reconnect: hello with the resume token at `path` until brokerd answers (a welcome,
 * resumed or not) or `deadline` passes; each try is a fresh connection. Resolves with the channel
 * and how many tries it took.
 */
export async function reopenWorkload(
  path: string,
  hello: { clientName: string; resumeToken: string },
  handlers: WorkloadHandlers,
  deadline: number,
  stillWanted: () => boolean,
): Promise<{ channel: WorkloadChannel; attempts: number }> {
  for (let attempt = 1; ; attempt++) {
    if (!stillWanted()) throw new Error("the client was closed while resuming");
    try {
      const timeoutMs = Math.max(1, Math.min(2000, deadline - Date.now()));
      return { channel: await WorkloadChannel.open([path], hello, handlers, timeoutMs), attempts: attempt };
    } catch (e) {
      if (!notBackYet(e) || Date.now() + backoffMs(attempt) >= deadline) throw e;
      await sleep(backoffMs(attempt));
    }
  }
}
