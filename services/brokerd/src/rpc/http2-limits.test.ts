// limitHttp2 on the installed @grpc/grpc-js: a peer of an injected connection is told brokerd's
// settings (a 0-byte header table, 16 KiB header lists), the session hook sees the session, and
// a server without the internals it needs is refused with a message rather than left unlimited.
import assert from "node:assert/strict";
import { connect as h2connect } from "node:http2";
import { createServer } from "node:net";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { HEADER_TABLE_SIZE, limitHttp2, MAX_HEADER_LIST_SIZE } from "./http2-limits.js";

test("limitHttp2: the peer gets brokerd's HTTP/2 settings and the hook sees its session", async () => {
  const server = new grpc.Server({ "grpc.max_concurrent_streams": 32 });
  let sessions = 0;
  limitHttp2(server, () => sessions++);
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const net = createServer((s) => injector.injectConnection(s));
  await new Promise<void>((r) => net.listen(0, "127.0.0.1", r));
  const port = (net.address() as { port: number }).port;
  const client = h2connect(`http://127.0.0.1:${port}`);
  const settings = await new Promise<Record<string, unknown>>((r) => client.once("remoteSettings", r));
  client.destroy();
  injector.destroy();
  net.close();
  server.forceShutdown();
  assert.equal(settings.headerTableSize, HEADER_TABLE_SIZE);
  assert.equal(settings.maxHeaderListSize, MAX_HEADER_LIST_SIZE);
  assert.equal(settings.maxConcurrentStreams, 32);
  assert.equal(sessions, 1);
});

test("limitHttp2: a grpc-js without the internals it needs is refused, with what to do", () => {
  assert.throws(
    () => limitHttp2({} as grpc.Server, () => {}),
    /no longer has Server.commonServerOptions.*install the @grpc\/grpc-js version/,
  );
});
