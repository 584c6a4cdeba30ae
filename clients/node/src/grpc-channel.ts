// grpc-channel.ts: owns the client's use of grpc-js: a BrokerService channel to broker.sock (its own
// subchannel: one connection, one brokerd session) and the session-bound client (every call names
// the session it expects, so a call that lands on a fresh connection after a brokerd restart is
// refused there with nothing done). The only client module that imports grpc-js's runtime (with
// grpc-session.ts, which uses it); the workload transport reaches it only through import(), so a
// client that never needs gRPC never loads grpc-js. It decides no retry and keeps no state.
import * as grpc from "@grpc/grpc-js";
import { BrokerService, createClient, type PromiseClient } from "@vfio-broker/proto";

/** Metadata naming the session a call expects (brokerd: rpc/broker-service.ts SESSION_METADATA). */
export const SESSION_METADATA = "vfio-broker-session";

/** A channel to brokerd's gRPC socket of its own (grpc-js would share one between clients). */
export function brokerChannel(
  socket: string,
  options: Record<string, number> = {},
): PromiseClient<typeof BrokerService> {
  return createClient(BrokerService, `unix:${socket}`, undefined, {
    "grpc.use_local_subchannel_pool": 1,
    ...options,
  });
}

/**
 * rpc with the session metadata on every call but Hello (which is where a session is resumed).
 * `session()` is read per call: after a resume the same client names the same session again.
 */
export function sessionBound(
  rpc: PromiseClient<typeof BrokerService>,
  session: () => string,
): PromiseClient<typeof BrokerService> {
  const md = () => {
    const m = new grpc.Metadata();
    m.set(SESSION_METADATA, session());
    return m;
  };
  return new Proxy(rpc, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== "function" || prop === "close" || prop === "hello") return v;
      const fn = v as (...args: unknown[]) => unknown;
      if (prop === "lease")
        return (opts?: { metadata?: grpc.Metadata }) => fn.call(target, { ...opts, metadata: md() });
      return (req: unknown, opts?: { metadata?: grpc.Metadata }) =>
        fn.call(target, req, { ...opts, metadata: md() });
    },
  });
}
