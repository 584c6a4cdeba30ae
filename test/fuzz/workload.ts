// workload.ts: generates byte-level fuzz cases for the workload protocol on fd.sock
// (workload.proto), run by fd-channel.ts's runner against the same live brokerd as the ticket
// cases. A case is a hello, valid or broken (versions, capabilities over their limits, bad
// strings, resume tokens, mutated bytes), maybe followed by requests; or a session: a prelude
// (a valid hello, then open sim0 or sim1) and then every request kind with typed random and
// mutated fields, ticket frames, oversize, zero-length and truncated frames, fds attached, noise,
// pipelined or split across writes. Its frames name the device file by SENTINEL
// (workload-wire.ts), patched to the real one at run time. Generated from a Prng alone: a seed
// reproduces them.

import { Attribute, Prot, WorkloadRequestSchema } from "@vfio-broker/proto";
import { FD_MAX_FRAME, type FdCase, type FdEnd, type FdWrite, frame, judge, pieces } from "./fd-channel.js";
import { emptyPool, randomInit } from "./messages.js";
import { mutate } from "./mutate.js";
import type { Prng } from "./prng.js";
import { encodeRequest, type HelloExpect, type RequestInit, SENTINEL } from "./workload-wire.js";

const CAP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._:-";
const capName = (rng: Prng, n = rng.range(1, 32)) =>
  Array.from({ length: n }, () => CAP_CHARS[rng.int(CAP_CHARS.length)]).join("");
const hex = (rng: Prng, n: number) =>
  rng
    .bytes(Math.ceil(n / 2))
    .toString("hex")
    .slice(0, n);

/**
 * A hello and what it must get: a broken limit (workload.proto's, next to each field) is an error
 * and the connection's close; an unknown resume token is no error (a fresh session, resumed false).
 */
export function helloFrame(rng: Prng): { bytes: Buffer; expect: HelloExpect; how: string } {
  const base = {
    version: rng.pick([1, 1, 1, 2, 7, 0xffffffff]),
    clientName: "fuzz",
    capabilities: ["events"],
  };
  const how = rng.weighted({
    valid: 4,
    version0: 1,
    manyCaps: 1,
    longCap: 1,
    badCap: 1,
    longName: 1,
    controlName: 1,
    badToken: 1,
    unknownToken: 1,
    mutated: 3,
  });
  const caps = (n: number) => Array.from({ length: n }, () => capName(rng));
  const hello = (h: object) => encodeRequest({ kind: { case: "hello", value: { ...base, ...h } } });
  switch (how) {
    case "valid":
      return { bytes: hello({ capabilities: caps(rng.range(0, 16)) }), expect: "OK", how };
    case "version0":
      return { bytes: hello({ version: 0 }), expect: "error", how };
    case "manyCaps":
      return { bytes: hello({ capabilities: caps(rng.range(17, 64)) }), expect: "error", how };
    case "longCap":
      return { bytes: hello({ capabilities: [capName(rng, rng.range(33, 300))] }), expect: "error", how };
    case "badCap":
      return {
        bytes: hello({ capabilities: [rng.pick(["a b", "é", "x\n", "a/b", "\u202e"])] }),
        expect: "error",
        how,
      };
    case "longName":
      return { bytes: hello({ clientName: "n".repeat(rng.range(129, 2000)) }), expect: "error", how };
    case "controlName":
      return {
        bytes: hello({ clientName: rng.pick(["a\u0000b", "a\nb", "\u2028", "\u202e", "\u200b"]) }),
        expect: "error",
        how,
      };
    case "badToken":
      return {
        bytes: hello({
          resumeToken: rng.pick([
            hex(rng, 33),
            "G".repeat(32),
            `${hex(rng, 32).toUpperCase()}A`,
            "0".repeat(1000),
          ]),
        }),
        expect: "error",
        how,
      };
    case "unknownToken":
      // A token no restored session has (or shorter hex): a fresh session, as a gRPC Hello's.
      return { bytes: hello({ resumeToken: hex(rng, rng.pick([1, 31, 32])) }), expect: "OK", how };
    default:
      return { bytes: mutate(hello({}), rng).bytes, expect: "any", how };
  }
}

/** A grant a correct client could send on the prelude's device file (which may lack the region). */
function validGrant(rng: Prng) {
  return {
    deviceFileId: SENTINEL,
    regionIndex: rng.pick([2, 4]),
    offset: 4096n * BigInt(rng.range(0, 8)),
    length: 4096n * BigInt(rng.range(1, 4)),
    attribute: rng.pick([Attribute.UC, Attribute.WC]),
    prot: rng.pick([Prot.READ, Prot.READ_WRITE]),
  };
}

/** A well-formed request of a random kind, so that grants really map and fds really come back. */
function validRequest(rng: Prng): Buffer {
  const cookie = () => 4096n * BigInt(rng.range(0, 64));
  const release = () => ({ deviceFileId: SENTINEL, cookie: cookie() });
  const kind = rng.weighted({ grant: 4, release: 2, batch: 2, listDevices: 1, closeDevice: 1 });
  if (kind === "grant") return encodeRequest({ kind: { case: "grant", value: validGrant(rng) } });
  if (kind === "release") return encodeRequest({ kind: { case: "release", value: release() } });
  if (kind === "batch") {
    const grants = Array.from({ length: rng.range(0, 8) }, () => validGrant(rng));
    const releases = Array.from({ length: rng.range(0, 4) }, release);
    return encodeRequest({ kind: { case: "batch", value: { grants, releases } } });
  }
  if (kind === "closeDevice")
    return encodeRequest({ kind: { case: "closeDevice", value: { deviceFileId: SENTINEL } } });
  return encodeRequest({ kind: { case: "listDevices", value: {} } });
}

const REQUEST_KINDS = ["listDevices", "openDevice", "grant", "release", "batch", "closeDevice", "hello"];

/** One request after the hello: typed random fields (device file ids SENTINEL), or mutated. */
export function requestFrame(rng: Prng, muts: string[]): Buffer {
  const pool = { ...emptyPool(), deviceFileIds: [SENTINEL], regionIndexes: [0, 2, 4] };
  const kind = rng.pick(REQUEST_KINDS);
  const field = WorkloadRequestSchema.fields.find((f) => f.localName === kind)!;
  let value: unknown = {};
  if (field.message) value = randomInit(field.message, rng, pool, 1, rng.chance(0.5));
  let bytes: Buffer;
  try {
    bytes = encodeRequest({ kind: { case: kind, value } } as RequestInit);
  } catch {
    bytes = encodeRequest({ kind: { case: "listDevices", value: {} } });
  }
  const how = rng.weighted({ valid: 3, typed: 4, mutated: 3, noise: 1, ticket: 1 });
  if (how === "valid") return validRequest(rng);
  if (how === "typed") return bytes;
  if (how === "noise") return rng.bytes(rng.size(3100));
  // A ticket-protocol frame (FdRequest{ticket}) on the workload connection.
  if (how === "ticket") return Buffer.concat([Buffer.from([0x0a, 0x20]), Buffer.from(hex(rng, 32))]);
  const m = mutate(bytes, rng, [bytes]);
  muts.push(...m.how);
  return m.bytes;
}

const KIND_WEIGHTS = {
  hello: 4,
  helloThenRequests: 2,
  session: 6,
  sessionSplit: 2,
  oversize: 1,
  withFds: 1,
  truncated: 1,
  zeroLength: 1,
} as const;

/** One workload case (FdCase with its plan). */
export function generateWorkloadCase(rng: Prng): FdCase {
  const kind = rng.weighted(KIND_WEIGHTS);
  const muts: string[] = [];
  const requests = (n: number) => Array.from({ length: n }, () => frame(requestFrame(rng, muts)));
  const session = kind !== "hello" && kind !== "helloThenRequests";
  let hello: HelloExpect = "OK";
  let writes: FdWrite[];
  let lead: Buffer[] = [];
  if (!session) {
    const h = helloFrame(rng);
    hello = h.expect;
    muts.push(`hello.${h.how}`);
    lead = [frame(h.bytes)];
  }
  switch (kind) {
    case "hello":
      writes = pieces(rng, lead[0]!, rng.range(1, 3));
      break;
    case "helloThenRequests":
    case "session":
      writes = pieces(rng, Buffer.concat([...lead, ...requests(rng.range(1, 24))]), rng.range(1, 3));
      break;
    case "sessionSplit":
      writes = pieces(rng, Buffer.concat(requests(rng.range(1, 4))), rng.range(2, 8));
      break;
    case "oversize": {
      const h = Buffer.alloc(4);
      h.writeUInt32BE(rng.pick([FD_MAX_FRAME + 1, 4096, 65536, 0x7fffffff, 0xffffffff]), 0);
      writes = [
        {
          bytes: Buffer.concat([...requests(rng.range(0, 3)), h, rng.bytes(rng.size(8000))]),
          fds: 0,
          pauseMs: 0,
        },
      ];
      break;
    }
    case "withFds":
      writes = pieces(
        rng,
        Buffer.concat(requests(rng.range(1, 3))),
        rng.range(1, 3),
        rng.range(0, 2),
        rng.range(1, 4),
      );
      break;
    case "truncated": {
      const f = Buffer.concat(requests(rng.range(1, 3)));
      writes = [{ bytes: f.subarray(0, rng.range(1, Math.max(1, f.length - 1))), fds: 0, pauseMs: 0 }];
      break;
    }
    case "zeroLength":
      writes = [
        {
          bytes: Buffer.concat([...requests(1), frame(Buffer.alloc(0)), frame(Buffer.alloc(0))]),
          fds: 0,
          pauseMs: 0,
        },
      ];
      break;
  }
  const { answerable, violation } = judge(writes);
  const end: FdEnd = rng.weighted({ read: 8, close: 1, "read-one-close": 1 });
  return {
    kind: `workload.${kind}`,
    writes,
    end,
    answerable,
    violation,
    realTickets: 0,
    mutations: muts,
    workload: { prelude: session, open: session ? rng.pick(["sim0", "sim1", ""]) : "", hello },
  };
}
