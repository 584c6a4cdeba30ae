// The workload protocol's decode and checks (fdpass/workload-decode.ts), property-tested in
// process: any bytes a client may send as a frame give a request or a message saying what is
// wrong, never an exception, and nothing else (a hello is never served as a request; a refusal's
// message names the field and stays short). A hello built from arbitrary strings is refused
// exactly when one of them breaks workload.proto's limits, written here independently of
// rpc/strings.ts: capabilities at most 16 names of at most 32 of `A-Za-z0-9._:-`, client_name at
// most 128 UTF-8 bytes of text, resume_token at most 32 lower-case hex digits.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { WorkloadRequestSchema } from "@vfio-broker/proto";
import fc from "fast-check";
import { MAX_REQUEST_BYTES } from "./adapter.js";
import { decodeRequest, helloOf, helloProblem, kindOf } from "./workload-decode.js";

const KINDS = ["listDevices", "openDevice", "grant", "release", "batch", "closeDevice"];
/** What text may not hold (rpc/strings.ts NOT_TEXT, restated). */
const NOT_TEXT = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}]/u;

/** Bytes that look like WorkloadRequests half the time: a real tag, then anything. */
const frames = fc.oneof(
  fc.uint8Array({ maxLength: MAX_REQUEST_BYTES }),
  fc
    .tuple(fc.constantFrom(0x82, 0x8a, 0x92, 0x9a, 0xa2, 0xaa, 0xb2, 0x0a), fc.uint8Array({ maxLength: 200 }))
    .map(([tag, rest]) => Uint8Array.from([tag, 0x01, ...rest])),
);

test("any frame: a request of a known kind or a short message, never an exception", () => {
  fc.assert(
    fc.property(frames, (b) => {
      const d = decodeRequest(b);
      if (d.ok) assert.ok(KINDS.includes(d.kind.case), `served kind ${d.kind.case}`);
      else assert.ok(d.message.length > 0 && d.message.length <= 400, d.message);
      const hello = helloOf(b);
      if (hello) {
        assert.equal(kindOf(b), "hello");
        assert.equal(d.ok, false, "a hello is never served as a request");
        const p = helloProblem(hello);
        assert.ok(p === undefined || (p.length > 0 && p.length <= 400));
      }
    }),
    { numRuns: 10_000 },
  );
});

const capability = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9._:-]{0,40}$/),
  fc.string({ maxLength: 40, unit: "binary" }),
);
const clientName = fc.oneof(
  fc.string({ maxLength: 140, unit: "grapheme" }),
  fc.string({ maxLength: 80, unit: "binary" }),
);
const resumeToken = fc.oneof(fc.stringMatching(/^[0-9a-f]{0,34}$/), fc.string({ maxLength: 40 }));

test("a hello is refused exactly when a string or the capability count breaks its limit", () => {
  fc.assert(
    fc.property(
      fc.array(capability, { maxLength: 20 }),
      clientName,
      resumeToken,
      fc.integer({ min: 0, max: 0xffffffff }),
      (capabilities, name, token, version) => {
        const b = toBinary(
          WorkloadRequestSchema,
          create(WorkloadRequestSchema, {
            kind: { case: "hello", value: { version, capabilities, clientName: name, resumeToken: token } },
          }),
        );
        const hello = helloOf(b);
        assert.ok(hello, "an encoded hello reads as one");
        const fits =
          capabilities.length <= 16 &&
          capabilities.every((c) => /^[A-Za-z0-9._:-]{0,32}$/.test(c)) &&
          Buffer.byteLength(name) <= 128 &&
          !NOT_TEXT.test(name) &&
          /^[0-9a-f]{0,32}$/.test(token);
        const p = helloProblem(hello);
        assert.equal(p === undefined, fits, `${JSON.stringify({ capabilities, name, token })}: ${p}`);
        if (p !== undefined) assert.match(p, /capabilit|client_name|resume_token/);
      },
    ),
    { numRuns: 5_000 },
  );
});
