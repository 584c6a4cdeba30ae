// BrokerError -> gRPC status, and the async-handler adapter every service uses. Unexpected
// exceptions become INTERNAL with the message logged (rate-limited: a client that can trigger one
// must not be able to flood stderr with stacks): a client can never crash brokerd.
import * as grpc from "@grpc/grpc-js";
import { isUndecodable } from "@vfio-broker/proto";
import { BrokerError, invalid } from "../errors.js";
import { logLimited } from "../log.js";

export function toStatus(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof BrokerError) return { code: grpc.status[e.code], details: e.message };
  const msg = e instanceof Error ? e.message : String(e);
  logLimited("rpc.internal-error", `brokerd: internal error: ${e instanceof Error ? e.stack : msg}`);
  return { code: grpc.status.INTERNAL, details: `internal error in brokerd: ${msg}` };
}

/** Wraps an async function as a grpc-js unary handler. */
export function unary<I, O>(
  fn: (req: I, call: grpc.ServerUnaryCall<I, O>) => O | Promise<O>,
): grpc.handleUnaryCall<I, O> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => {
        // Bytes that are not the request protobuf: INVALID_ARGUMENT, as the API promises.
        if (isUndecodable(call.request)) throw invalid(call.request.message, "undecodable");
        return fn(call.request, call);
      })
      .then(
        (res) => callback(null, res),
        (e) => callback(toStatus(e) as grpc.ServiceError),
      );
  };
}
