// connect.ts: owns connect(): which transport a client uses (workload-connect.ts decides), the
// first check that brokerd's socket is there (with words for a missing socket or a closed
// directory), and the start of the session on that transport (the workload welcome, or the gRPC
// Hello and its first Lease), handed to a new BrokerClient. The gRPC transport is imported only
// when chosen, so a workload client does not load grpc-js for it. It keeps no state and never
// touches a session once the client has it.
import { statSync } from "node:fs";
import { BrokerClient } from "./client.js";
import { type ConnectOptions, DEFAULT_SOCKET } from "./connect-options.js";
import { BrokerClientError, toClientError } from "./errors.js";
import type { WorkloadChannel } from "./workload-channel.js";
import { chooseTransport, openWorkload } from "./workload-connect.js";
import { Relay, WorkloadSession } from "./workload-session.js";

function socketMissing(path: string): BrokerClientError | undefined {
  try {
    const st = statSync(path);
    if (!st.isSocket())
      return new BrokerClientError("UNAVAILABLE", `${path} is not a socket; brokerd is not running there`);
    return undefined;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR")
      return new BrokerClientError("UNAVAILABLE", `brokerd is not running at ${path} (no socket there)`);
    if (code === "EACCES")
      return new BrokerClientError(
        "PERMISSION_DENIED",
        `cannot reach ${path}: permission denied on its directory`,
      );
    return undefined;
  }
}

/**
 * Connects to brokerd: by default one workload-protocol connection to fd.sock (its hello; the
 * connection is the lease); with transport "grpc", a gRPC Hello and (by default) the Lease.
 */
export async function connect(opts: ConnectOptions = {}): Promise<BrokerClient> {
  const socket = opts.socket || process.env.VFIO_BROKER_SOCKET || DEFAULT_SOCKET;
  const transport = chooseTransport(opts);
  const explicit = opts.fdSocket || process.env.VFIO_BROKER_FD_SOCKET;
  // On the workload protocol with fd.sock named, the broker socket is needed only by a gRPC-only call.
  const missing = transport === "workload" && explicit ? undefined : socketMissing(socket);
  if (missing) throw missing;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const name = opts.clientName ?? "vfio-broker-node";
  if (transport === "workload") {
    const relay = new Relay(0);
    let channel: WorkloadChannel;
    try {
      channel = await openWorkload(socket, explicit, name, relay, timeoutMs);
    } catch (e) {
      throw toClientError(e, "Hello");
    }
    return new BrokerClient(new WorkloadSession(channel, relay, socket, opts), socket, opts);
  }
  // The gRPC transport (and grpc-js with it) is loaded only by a client that uses it.
  const { GrpcSession, helloGrpc } = await import("./grpc-session.js");
  const { rpc, hello } = await helloGrpc(socket, name, timeoutMs);
  const session = new GrpcSession(rpc, hello, socket, opts);
  const client = new BrokerClient(session, socket, opts);
  if (opts.lease !== false) {
    try {
      await session.openLease(timeoutMs, 0);
    } catch (e) {
      rpc.close();
      throw toClientError(e, "Lease");
    }
  }
  return client;
}
