// The workload lease (fdpass/workload-lease.ts) over a fake connection: events held until the
// hello's reply is out, pushed as WorkloadReply event frames, bounded for a peer that stops
// reading, and lease_ended last, after which the connection ends.
import assert from "node:assert/strict";
import { test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { WorkloadReplySchema } from "@vfio-broker/proto";
import type { FdConnection } from "./transport.js";
import { MAX_QUEUED_EVENTS, workloadLease } from "./workload-lease.js";

function fakeConnection(opts: { queued?: number; fail?: string } = {}) {
  const sent: string[] = [];
  let ended = 0;
  const c = {
    peer: { uid: 1, gid: 1, pid: 1 },
    queued: opts.queued ?? 0,
    reply(bytes: Uint8Array): Promise<void> {
      if (opts.fail) return Promise.reject(Object.assign(new Error(opts.fail), { code: opts.fail }));
      const r = fromBinary(WorkloadReplySchema, bytes);
      sent.push(r.kind.case === "event" ? String(r.kind.value.kind.case) : `not an event: ${r.kind.case}`);
      return Promise.resolve();
    },
    room: () => Promise.resolve(true),
    identify: () => {
      throw new Error("not here");
    },
    holdOpen() {},
    end() {
      ended++;
    },
  } satisfies FdConnection;
  return { c, sent, ended: () => ended };
}

const health = { kind: "device_health", deviceId: "sim0", health: "healthy" } as const;
const revocation = {
  kind: "revocation",
  deviceFileId: 1n,
  cookie: 4096n,
  deviceId: "sim0",
  reason: "operator",
  message: "",
} as const;

test("events wait for ready(), then go down in order; keepalive acks are not said", async () => {
  const f = fakeConnection();
  const lease = workloadLease(f.c, () => assert.fail("not stalled"));
  lease.send(health);
  lease.send({ kind: "keepalive_ack", sequence: 1n });
  assert.deepEqual(f.sent, []);
  lease.ready();
  lease.send(revocation);
  await lease.end("operator", "revoked");
  assert.deepEqual(f.sent, ["deviceHealth", "revocation", "leaseEnded"]);
  assert.equal(f.ended(), 1);
  lease.send(health);
  assert.equal(f.sent.length, 3, "nothing after the end");
});

test("a peer that leaves MAX_QUEUED_EVENTS frames unsent is stalled, once", async () => {
  const f = fakeConnection({ queued: MAX_QUEUED_EVENTS });
  const why: string[] = [];
  const lease = workloadLease(f.c, (w) => why.push(w.reason));
  lease.ready();
  lease.send(health);
  lease.send(health);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(why, ["lease-stalled"]);
  assert.deepEqual(f.sent, []);
});

test("before ready(), more than MAX_QUEUED_EVENTS held events stall it too", async () => {
  const f = fakeConnection();
  const why: string[] = [];
  const lease = workloadLease(f.c, (w) => why.push(w.reason));
  for (let i = 0; i <= MAX_QUEUED_EVENTS; i++) lease.send(health);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(why, ["lease-stalled"]);
});

test("a frame not taken in time stalls it; a peer gone does not", async () => {
  for (const [fail, want] of [
    ["ETIMEDOUT", ["lease-stalled"]],
    ["EPIPE", []],
  ] as const) {
    const f = fakeConnection({ fail });
    const why: string[] = [];
    const lease = workloadLease(f.c, (w) => why.push(w.reason));
    lease.ready();
    lease.send(health);
    await new Promise((r) => setTimeout(r, 1));
    assert.deepEqual(why, want, fail);
  }
});
