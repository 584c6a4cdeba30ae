// fuzz-tools.test.ts: the fuzzer's own parts that decide what a run means: the seeded generator
// (a printed seed must reproduce the inputs), the wire parser the mutations stand on, the typed
// message builder (its output must decode, or "typed" cases would really be noise), and the
// fd-channel oracle that says how many replies brokerd owes and when it must hang up.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import { WorkloadAdapter } from "@vfio-broker/brokerd/fdpass/workload-adapter";
import {
  Attribute,
  CreateMappingRequestSchema,
  FdRequestSchema,
  Prot,
  WorkloadRequestSchema,
} from "@vfio-broker/proto";
import { FD_MAX_FRAME, frame, generateFdCase, judge } from "./fd-channel.js";
import { generateGrpcCase, UNARY_METHODS } from "./grpc-unary.js";
import { emptyPool, randomMessage } from "./messages.js";
import { encodeWire, mutate, parseWire } from "./mutate.js";
import { Prng } from "./prng.js";
import { generateWorkloadCase } from "./workload.js";
import { encodeRequest, patchSentinel, SENTINEL } from "./workload-wire.js";

const draw = (p: Prng, n: number): number[] => Array.from({ length: n }, () => p.u32());

test("a seed reproduces its stream, and fork(i) does not depend on other forks", () => {
  assert.deepEqual(draw(new Prng(42), 8), draw(new Prng(42), 8));
  assert.notDeepEqual(draw(new Prng(42), 8), draw(new Prng(43), 8));
  const a = new Prng(7);
  const b = new Prng(7);
  draw(b.fork(0), 100);
  assert.deepEqual(draw(a.fork(1), 4), draw(b.fork(1), 4));
  const r = new Prng(1);
  for (let i = 0; i < 1000; i++) {
    const x = r.int(10);
    assert.ok(x >= 0 && x < 10 && Number.isInteger(x));
    assert.ok(r.size(300) <= 300);
  }
});

test("parseWire splits real messages into fields that re-encode to the same bytes", () => {
  const msg = Buffer.from(
    toBinary(
      CreateMappingRequestSchema,
      create(CreateMappingRequestSchema, {
        deviceFileId: 3n,
        regionIndex: 2,
        offset: 1n << 40n,
        length: 4096n,
        attribute: Attribute.WC,
        prot: Prot.READ_WRITE,
        allowFallback: true,
      }),
    ),
  );
  const fields = parseWire(msg);
  assert.ok(fields);
  assert.deepEqual(
    fields.map((f) => f.field),
    [1, 2, 3, 4, 5, 6, 7],
  );
  assert.deepEqual(encodeWire(fields), msg);
  assert.equal(parseWire(Buffer.from([0x0a, 0x05, 0x61])), null, "a length past the end is not wire data");
});

test("mutations are deterministic per seed and change the input", () => {
  const base = Buffer.from(toBinary(FdRequestSchema, create(FdRequestSchema, { ticket: "abcdef" })));
  let changed = 0;
  for (let seed = 0; seed < 200; seed++) {
    const x = mutate(base, new Prng(seed));
    assert.deepEqual(x, mutate(base, new Prng(seed)));
    if (!x.bytes.equals(base)) changed++;
  }
  assert.ok(changed > 180, `only ${changed} of 200 mutations changed the bytes`);
});

test("typed random requests for every BrokerService method decode with the method's schema", () => {
  const rng = new Prng(99);
  for (const m of UNARY_METHODS) {
    for (let i = 0; i < 200; i++) {
      const b = randomMessage(m.input as DescMessage, rng, emptyPool());
      assert.doesNotThrow(() => fromBinary(m.input as DescMessage, b), `${m.name} #${i}`);
    }
  }
  const names = new Set(
    Array.from({ length: 2000 }, (_, i) => generateGrpcCase(new Prng(i), emptyPool()).method),
  );
  assert.deepEqual([...names].sort(), [...UNARY_METHODS.map((m) => m.name), "Lease"].sort());
});

test("the fd-channel oracle: replies owed up to the first violation, and fds break the stream", () => {
  const w = (bytes: Buffer, fds = 0) => ({ bytes, fds, pauseMs: 0 });
  const ok = frame(Buffer.from("abc"));
  const big = Buffer.alloc(4);
  big.writeUInt32BE(FD_MAX_FRAME + 1);
  assert.deepEqual(judge([w(Buffer.concat([ok, ok]))]), { answerable: 2, violation: false });
  assert.deepEqual(judge([w(ok.subarray(0, 3)), w(ok.subarray(3))]), { answerable: 1, violation: false });
  assert.deepEqual(judge([w(Buffer.concat([ok, ok.subarray(0, 5)]))]), { answerable: 1, violation: false });
  assert.deepEqual(judge([w(Buffer.concat([ok, big, ok]))]), { answerable: 1, violation: true });
  assert.deepEqual(judge([w(frame(Buffer.alloc(FD_MAX_FRAME)))]), { answerable: 1, violation: false });
  assert.deepEqual(judge([w(ok), w(ok, 1)]), { answerable: 0, violation: true });
  // A first frame that is a workload hello: one reply per frame all the same (the runner judges
  // them as WorkloadReply, and a refused hello by the close that follows it).
  const hello = frame(Buffer.from([0x82, 0x01, 0x02, 0x08, 0x01]));
  assert.deepEqual(judge([w(Buffer.concat([hello, ok]))]), { answerable: 2, violation: false });
  assert.deepEqual(judge([w(Buffer.concat([ok, hello]))]), { answerable: 2, violation: false });
  for (let i = 0; i < 300; i++) {
    const c = generateFdCase(new Prng(i), []);
    assert.deepEqual({ answerable: c.answerable, violation: c.violation }, judge(c.writes));
    assert.ok(
      c.writes.every((x) => x.bytes.length > 0),
      "every write carries at least one byte",
    );
  }
});

test("workload cases: the device-file sentinel is patched in place, and every case is judged as generated", () => {
  const grant = encodeRequest({ kind: { case: "grant", value: { deviceFileId: SENTINEL, length: 4096n } } });
  const patched = patchSentinel(grant, 7n);
  assert.equal(patched.length, grant.length, "no frame changes length");
  const req = fromBinary(WorkloadRequestSchema, patched);
  assert.equal(req.kind.case === "grant" && req.kind.value.deviceFileId, 7n);
  const kinds = new Set<string>();
  let hellos = 0;
  for (let i = 0; i < 500; i++) {
    const c = generateWorkloadCase(new Prng(i));
    kinds.add(c.kind);
    assert.ok(c.workload, "a workload case has its plan");
    assert.deepEqual({ answerable: c.answerable, violation: c.violation }, judge(c.writes));
    const stream = Buffer.concat(c.writes.map((x) => x.bytes));
    const first = stream.subarray(4, 4 + (stream.length >= 4 ? stream.readUInt32BE(0) : 0));
    if (!c.workload.prelude && WorkloadAdapter.helloOf(first) !== undefined) hellos++;
  }
  assert.ok(kinds.size >= 8, `only ${[...kinds].join(", ")}`);
  assert.ok(hellos > 50, `only ${hellos} cases start with a hello brokerd reads as one`);
});
