// Starts a grpc-js server on a Unix socket path (a stale socket file from an earlier run is
// removed first; the socket is made 0600: only root, i.e. the kubelet, may call it). Owns socket
// setup and shutdown only; services are the callers'.
import { chmodSync, lstatSync, mkdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import * as grpc from "@grpc/grpc-js";

/** Grpc message size limit for the kubelet's sockets (requests are a few claims; answers small). */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export async function serveUnix(path: string, add: (s: grpc.Server) => void): Promise<grpc.Server> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o750 });
  try {
    if (lstatSync(path).isSocket()) rmSync(path);
  } catch {}
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  });
  add(server);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${path}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  chmodSync(path, 0o600);
  return server;
}

export function stopServer(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => server.tryShutdown(() => resolve()));
}
