// Status codes as the spec says. Undecodable request bytes used to get INTERNAL (79 of 315
// malformed calls) where broker.proto promises INVALID_ARGUMENT; a Lease used to end by a bare
// connection drop. Now: INVALID_ARGUMENT for every undecodable unary request and Lease message,
// lease expiry after exactly three missed intervals with LeaseEnded{lease-expired}, and a client
// that closes its Lease gets LeaseEnded{lease-closed} and status OK.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { BrokerService, type LeaseResponse } from "@vfio-broker/proto";
import { brokerClient } from "../e2e/agents/raw.js";
import { assertAlive, assertVictim, report, startVictim, suiteBrokerd } from "./support/harness.js";

const KEEPALIVE_MS = 1000;
// Bytes no protobuf decoder accepts: a field tag with wire type 7.
const GARBAGE = Buffer.from([0x0f, 0xff, 0xff, 0xff, 0xff]);

/** A BrokerService client that sends raw bytes and returns raw bytes. */
function rawClient(socket: string) {
  const def: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  for (const m of BrokerService.methods)
    def[m.localName] = {
      path: `/${BrokerService.typeName}/${m.name}`,
      requestStream: m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "bidi_streaming",
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    };
  const Ctor = grpc.makeGenericClientConstructor(def, "raw");
  return new Ctor(`unix:${socket}`, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  }) as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
}

describe("hostile: status codes", () => {
  const suite = suiteBrokerd({ args: ["--lease-keepalive-ms", String(KEEPALIVE_MS)] });

  it("undecodable bytes on every unary RPC and on the Lease get INVALID_ARGUMENT", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const victim = startVictim(b);
    const c = rawClient(b.socket);
    const codes: Record<string, string> = {};
    for (const m of BrokerService.methods) {
      if (m.methodKind !== "unary") continue;
      codes[m.name] = await new Promise<string>((resolve) =>
        c[m.localName]!(GARBAGE, (err: grpc.ServiceError | null) =>
          resolve(err ? grpc.status[err.code] : "OK"),
        ),
      );
    }
    const lease = c.lease!() as grpc.ClientDuplexStream<Buffer, Buffer>;
    lease.on("data", () => {});
    const leaseCode = await new Promise<string>((resolve) => {
      lease.on("error", (e: grpc.ServiceError) => resolve(grpc.status[e.code]));
      lease.on("status", (s: grpc.StatusObject) => resolve(grpc.status[s.code]));
      lease.write(GARBAGE);
    });
    c.close();
    const v = await victim.stop();
    assertAlive(b);
    report("undecodable requests", { codes, lease: leaseCode, victim: v });
    assertVictim(v, 0.99);
    for (const [name, code] of Object.entries(codes)) assert.equal(code, "INVALID_ARGUMENT", name);
    assert.equal(leaseCode, "INVALID_ARGUMENT");
  });

  it("a lease with no keepalive ends after three intervals, with LeaseEnded{lease-expired}", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const c = brokerClient(b.socket);
    await c.hello({});
    const { call } = c.lease();
    let grantedAt = 0;
    const ended = await new Promise<{ reason: string; message: string; ms: number; status: string }>(
      (resolve) => {
        let end: { reason: string; message: string; ms: number } | undefined;
        call.on("data", (r: LeaseResponse) => {
          if (r.kind.case === "granted") grantedAt = Date.now();
          if (r.kind.case === "ended") end = { ...r.kind.value, ms: Date.now() - grantedAt };
        });
        call.on("status", (s: grpc.StatusObject) => resolve({ ...end!, status: grpc.status[s.code] }));
        call.on("error", () => {});
      },
    );
    c.close();
    report("lease expiry", { keepaliveMs: KEEPALIVE_MS, ...ended });
    assert.equal(ended.reason, "lease-expired");
    assert.match(ended.message, /three intervals/);
    assert.equal(ended.status, "OK");
    // Three missed intervals: not before, and well before a fourth.
    assert.ok(ended.ms >= 3 * KEEPALIVE_MS - 50, `ended after ${ended.ms} ms`);
    assert.ok(ended.ms < 4 * KEEPALIVE_MS + 200, `ended after ${ended.ms} ms`);
  });

  it("a client that closes its Lease gets LeaseEnded{lease-closed} and status OK", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const c = brokerClient(b.socket);
    await c.hello({});
    const { call } = c.lease();
    const r = await new Promise<{ reason: string; status: string; error: string }>((resolve) => {
      let reason = "";
      let error = "";
      call.on("data", (m: LeaseResponse) => {
        if (m.kind.case === "granted") call.end();
        if (m.kind.case === "ended") reason = m.kind.value.reason;
      });
      call.on("error", (e: Error) => {
        error = e.message;
      });
      call.on("status", (s: grpc.StatusObject) => resolve({ reason, status: grpc.status[s.code], error }));
    });
    c.close();
    report("lease closed by the client", r);
    assert.deepEqual(r, { reason: "lease-closed", status: "OK", error: "" });
  });
});
