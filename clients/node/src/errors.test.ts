import assert from "node:assert/strict";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { UsageError } from "./args.js";
import { BrokerClientError, FdChannelError, grpcCodeName, toClientError } from "./errors.js";
import { describeError } from "./format.js";

function serviceError(code: number, details: string): Error {
  return Object.assign(new Error(`${code} ${grpcCodeName(code)}: ${details}`), {
    code,
    details,
    metadata: {},
  });
}

test("grpcCodeName", () => {
  assert.equal(grpcCodeName(status.PERMISSION_DENIED), "PERMISSION_DENIED");
  assert.equal(grpcCodeName(status.UNAVAILABLE), "UNAVAILABLE");
  assert.equal(grpcCodeName(0), "OK");
  assert.equal(grpcCodeName(99), "UNKNOWN");
});

test("toClientError: a grpc-js ServiceError becomes a BrokerClientError with the status name and the broker's message", () => {
  const e = toClientError(
    serviceError(status.PERMISSION_DENIED, "policy denies uid 1000 sim0 WC"),
    "CreateMapping",
  );
  assert.ok(e instanceof BrokerClientError);
  assert.equal(e.code, "PERMISSION_DENIED");
  assert.equal(e.details, "policy denies uid 1000 sim0 WC");
  assert.equal(e.method, "CreateMapping");
  assert.equal(e.message, "CreateMapping: policy denies uid 1000 sim0 WC (PERMISSION_DENIED)");
  assert.ok(e.cause instanceof Error);
  // no details: fall back to the message without grpc-js's "<code> <NAME>: " prefix
  const e2 = toClientError(
    Object.assign(new Error("14 UNAVAILABLE: No connection established"), { code: 14 }),
  );
  assert.ok(e2 instanceof BrokerClientError);
  assert.equal(e2.details, "No connection established");
});

test("toClientError: our errors and plain errors pass through", () => {
  const fd = new FdChannelError("EXPIRED", "ticket expired");
  assert.equal(toClientError(fd), fd);
  const plain = new TypeError("x");
  assert.equal(toClientError(plain), plain);
  assert.equal(toClientError("boom").message, "boom");
});

test("describeError: one line, what happened; what to do, and the exit status", () => {
  const ctx = { socket: "/run/vfio-broker/broker.sock" };
  const missing = describeError(
    new BrokerClientError(
      "UNAVAILABLE",
      "brokerd is not running at /run/vfio-broker/broker.sock (no socket there)",
    ),
    ctx,
  );
  assert.equal(missing.exitCode, 1);
  assert.equal(
    missing.message,
    "vfio-broker: brokerd isn't running at /run/vfio-broker/broker.sock (no socket there); start brokerd, or point at its socket with --socket PATH or VFIO_BROKER_SOCKET",
  );
  const denied = describeError(
    new BrokerClientError("PERMISSION_DENIED", "no rule allows uid 1000 to open sim0"),
    ctx,
  );
  assert.equal(
    denied.message,
    "vfio-broker: no rule allows uid 1000 to open sim0 (PERMISSION_DENIED); the broker's policy does not allow this; ask the operator to add a rule for your identity",
  );
  // the broker's message already says what to do: no second hint
  const bad = describeError(
    new BrokerClientError("INVALID_ARGUMENT", "length 100 is not page aligned; round up to 4096"),
    ctx,
  );
  assert.equal(
    bad.message,
    "vfio-broker: length 100 is not page aligned; round up to 4096 (INVALID_ARGUMENT)",
  );
  const usage = describeError(new UsageError("unknown option --x"), ctx);
  assert.deepEqual(usage, {
    message: "vfio-broker: unknown option --x; see vfio-broker --help",
    exitCode: 2,
  });
  const fd = describeError(new FdChannelError("WRONG_PEER", "issued to another process"), ctx);
  assert.equal(fd.exitCode, 1);
  assert.match(
    fd.message,
    /^vfio-broker: fd channel: issued to another process \(WRONG_PEER\); present the ticket from the same process/,
  );
  assert.equal(describeError(new RangeError('device sim0 has no region "BAR9"'), ctx).exitCode, 2);
  for (const e of [missing, denied, bad, usage, fd]) assert.ok(!e.message.includes("\n"));
});
