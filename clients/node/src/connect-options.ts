// connect-options.ts: owns ConnectOptions (what connect() can be told) and the default broker
// socket path. Types and constants only: reading the environment and choosing a transport are
// connect()'s and workload-connect.ts's.
import type { Transport } from "./workload-connect.js";

export const DEFAULT_SOCKET = "/run/vfio-broker/broker.sock";

export interface ConnectOptions {
  /** brokerd's gRPC socket. Default: $VFIO_BROKER_SOCKET, else /run/vfio-broker/broker.sock. */
  socket?: string;
  /**
   * The fd channel socket. Default: $VFIO_BROKER_FD_SOCKET, else found by itself: Hello's
   * fd_socket_name next to `socket` (wherever its directory is mounted), then Hello's fd_socket_path.
   */
  fdSocket?: string;
  /** Shown to operators (admin API, audit log). Default "vfio-broker-node". */
  clientName?: string;
  /** Open the Lease stream and keep it alive (default true). Without it there are no events. */
  lease?: boolean;
  /** Deadline for Hello and the lease grant, milliseconds. Default 10000. */
  timeoutMs?: number;
  /**
   * When brokerd restarts (upgrade, crash, kill -9), reconnect with backoff and resume the session:
   * device files and mappings stay (mappings stay mapped), the lease is reopened, calls in flight
   * are retried (each state change carries a request id, so none is doubled). Default true.
   */
  autoResume?: boolean;
  /** How long to keep trying to resume before giving up (then "leaseLost"), ms. Default 60000. */
  resumeTimeoutMs?: number;
  /**
   * Map and release through the fd channel's grant fast path when brokerd offers it (one
   * exchange per grant instead of two gRPC calls and a ticket). Default true; false: always gRPC
   * (CreateMapping + a ticket), which implies transport "grpc".
   */
  fdGrants?: boolean;
  /**
   * "workload" (the default; else $VFIO_BROKER_TRANSPORT): the session is one workload-protocol
   * connection to fd.sock (workload.proto): hello, list, open, map, release, batches, close and
   * the events all go on it, and the connection is the lease (no keepalives; `lease` is ignored).
   * The calls it lacks (read/write, device(), anything through `rpc`) go through a second
   * session, over gRPC, opened at the first such call and counted against the sessions quota
   * (side-session.ts). "grpc": everything on broker.sock as before (Hello, Lease, tickets or
   * fd-channel grants).
   */
  transport?: Transport;
}
