// The HTTP/2 settings and per-session hook of brokerd's grpc-js servers. grpc-js passes only a few
// options to Node's http2 server (max_concurrent_streams, max_session_memory); the header table,
// header list and invalid-frame limits below, and a look at every session it creates (server.ts
// counts each connection's resets there), need its private `createHttp2Server` and
// `commonServerOptions`. Both are checked when a server is set up: if grpc-js changes them,
// brokerd refuses to start with this message rather than run without the limits.
import type * as http2 from "node:http2";
import type * as grpc from "@grpc/grpc-js";

/**
 * HPACK dynamic table brokerd decodes with: none. Every header a peer makes brokerd decode is a
 * byte it sent (no one-byte reference to a 4 KB entry), at the cost of ~100 bytes more per call.
 * Applies once the peer acknowledges brokerd's SETTINGS (server.ts closes a peer that does not).
 */
export const HEADER_TABLE_SIZE = 0;
/** Decoded header bytes per request (gRPC's own headers are a few hundred bytes). */
export const MAX_HEADER_LIST_SIZE = 16 * 1024;
/** Header fields per request (a gRPC call has about 10). */
export const MAX_HEADER_LIST_PAIRS = 32;
/** Streams refused (over max_concurrent_streams) and invalid frames before Node drops the session. */
export const MAX_REJECTED_STREAMS = 32;
export const MAX_INVALID_FRAMES = 32;

export const HTTP2_OPTIONS: http2.ServerOptions = {
  maxHeaderListPairs: MAX_HEADER_LIST_PAIRS,
  maxSessionRejectedStreams: MAX_REJECTED_STREAMS,
  maxSessionInvalidFrames: MAX_INVALID_FRAMES,
};

interface GrpcServerInternals {
  commonServerOptions?: http2.ServerOptions;
  createHttp2Server?: (credentials: grpc.ServerCredentials) => http2.Http2Server;
}

/**
 * Makes every http2 server `server` creates from now on (createConnectionInjector) use the limits
 * above, and calls onSession with each session it opens. Throws if grpc-js no longer has the
 * internals this relies on.
 */
export function limitHttp2(
  server: grpc.Server,
  onSession: (session: http2.ServerHttp2Session) => void,
): void {
  const internals = server as unknown as GrpcServerInternals;
  const common = internals.commonServerOptions;
  const create = internals.createHttp2Server;
  if (typeof common !== "object" || common === null || typeof create !== "function")
    throw new Error(
      "@grpc/grpc-js no longer has Server.commonServerOptions / createHttp2Server: brokerd's HTTP/2 limits " +
        "(rpc/http2-limits.ts) cannot be applied; install the @grpc/grpc-js version in package-lock.json",
    );
  Object.assign(common, HTTP2_OPTIONS, {
    settings: {
      ...common.settings,
      headerTableSize: HEADER_TABLE_SIZE,
      maxHeaderListSize: MAX_HEADER_LIST_SIZE,
    },
  });
  internals.createHttp2Server = (credentials) => {
    const h2 = create.call(server, credentials);
    h2.on("session", onSession);
    return h2;
  };
}
