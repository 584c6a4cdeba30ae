// Which protocol a frame on fd.sock meets (fdpass/protocols.ts), over a fake connection and a
// broker that only counts: a WorkloadRequest on a ticket connection (a workload request before any
// hello, a hello after a ticket frame) is answered FD_STATUS_BAD_REQUEST saying to send the hello
// first, not "no such ticket"; an FdRequest on a workload connection is told it is one.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FdStatus, WorkloadReplySchema, WorkloadRequestSchema } from "@vfio-broker/proto";
import type { Broker } from "../broker.js";
import { FdProtocols } from "./protocols.js";
import type { FdConnection } from "./transport.js";
import { noRequest } from "./workload-decode.js";

function fakes() {
  const replies: { status: string; message: string }[] = [];
  const emitted: string[] = [];
  const broker = { frozen: false, emit: (e: string, r: string) => emitted.push(`${e}:${r}`) };
  const c = {
    peer: { uid: 1, gid: 1, pid: 1 },
    queued: 0,
    reply(bytes: Uint8Array): Promise<void> {
      const r = fromBinary(WorkloadReplySchema, bytes);
      replies.push({ status: FdStatus[r.status] ?? "?", message: r.message });
      return Promise.resolve();
    },
    room: () => Promise.resolve(true),
    identify: () => {
      throw new Error("not here");
    },
    holdOpen() {},
    end() {},
  } satisfies FdConnection;
  return { p: new FdProtocols(broker as unknown as Broker), c, replies, emitted };
}

const request = (kind: Parameters<typeof create<typeof WorkloadRequestSchema>>[1]) =>
  toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, kind));

test("a workload request before any hello: BAD_REQUEST, send the hello first; counted as a bad request", async () => {
  const f = fakes();
  assert.equal(await f.p.serve(f.c, request({ kind: { case: "listDevices", value: {} } })), true);
  assert.equal(await f.p.serve(f.c, request({ kind: { case: "hello", value: { version: 1 } } })), true);
  assert.deepEqual(
    f.replies.map((r) => r.status),
    ["BAD_REQUEST", "BAD_REQUEST"],
  );
  assert.match(
    f.replies[0]!.message,
    /WorkloadRequest \(listDevices\) as the first frame.*send the hello first/,
  );
  assert.match(f.replies[1]!.message, /hello must be the first frame of its connection/);
  assert.deepEqual(f.emitted, ["fd.delivery:bad_request", "fd.delivery:bad_request"]);
});

test("an FdRequest on a workload connection is named as one", () => {
  const ticket = fromBinary(WorkloadRequestSchema, Uint8Array.from([0x0a, 0x02, 0x61, 0x62]));
  assert.match(noRequest(ticket), /FdRequest \(ticket protocol\) on a workload connection/);
  const unknown = fromBinary(WorkloadRequestSchema, Uint8Array.from([0x9a, 0x06, 0x00]));
  assert.match(noRequest(unknown), /names no request this brokerd knows/);
});
