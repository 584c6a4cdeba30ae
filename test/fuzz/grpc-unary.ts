// grpc-unary.ts: raw-bytes fuzz cases for every BrokerService method on broker.sock. A raw client
// (grpc-js with identity serializers) sends the request bytes exactly as generated, so brokerd's
// own decoder sees them: well-typed random messages (messages.ts), mutations of them (mutate.ts)
// and noise. Each answer is classified by status code and by whether the bytes were decodable at
// all (decided with the same protobuf-es fromBinary brokerd uses). The spec wants INVALID_ARGUMENT
// for undecodable requests (docs/design.md §5.8); INTERNAL anywhere means brokerd did not expect the input.
import { type DescMessage, type DescMethod, fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  BrokerService,
  CreateMappingResponseSchema,
  ListDevicesResponseSchema,
  OpenDeviceResponseSchema,
} from "@vfio-broker/proto";
import { type IdPool, randomMessage } from "./messages.js";
import { mutate } from "./mutate.js";
import type { Prng } from "./prng.js";

type Method = DescMethod & { input: DescMessage; output: DescMessage };

const CALL_TIMEOUT_MS = 5000;
/** brokerd's grpc.max_receive_message_length (services/brokerd/src/daemon.ts). */
const MAX_MESSAGE = 64 * 1024;

export const UNARY_METHODS: readonly Method[] = (BrokerService.methods as Method[]).filter(
  (m) => m.methodKind === "unary",
);
const LEASE = (BrokerService.methods as Method[]).find((m) => m.name === "Lease")!;

const identity = (b: Buffer): Buffer => b;

export interface GrpcCase {
  method: string;
  bytes: Buffer;
  how: string[];
  /** Lease is a bidi stream: these are its messages, sent on a connection of their own. */
  stream: Buffer[] | null;
}

export interface GrpcResult {
  code: string;
  /** Whether fromBinary accepts the request bytes (for Lease: every message). */
  decodable: boolean;
  details: string;
  problems: string[];
}

export function decodable(schema: DescMessage, bytes: Buffer): boolean {
  try {
    fromBinary(schema, bytes);
    return true;
  } catch {
    return false;
  }
}

function hostileBytes(schema: DescMessage, rng: Prng, pool: IdPool): { bytes: Buffer; how: string[] } {
  const base = randomMessage(schema, rng, pool);
  const how = rng.weighted({ typed: 4, mutated: 5, noise: 1, oversize: 0.2 });
  if (how === "typed") return { bytes: base, how: ["typed"] };
  if (how === "noise") return { bytes: rng.bytes(rng.size(4096)), how: ["noise"] };
  if (how === "oversize") return { bytes: rng.bytes(MAX_MESSAGE + rng.range(1, 4096)), how: ["oversize"] };
  const m = mutate(base, rng, [randomMessage(schema, rng, pool)]);
  return { bytes: m.bytes, how: m.how };
}

export function generateGrpcCase(rng: Prng, pool: IdPool): GrpcCase {
  if (rng.chance(0.03)) {
    const stream = Array.from({ length: rng.range(1, 4) }, () => hostileBytes(LEASE.input, rng, pool).bytes);
    return { method: LEASE.name, bytes: Buffer.alloc(0), how: ["lease-stream"], stream };
  }
  const m = rng.pick(UNARY_METHODS);
  const { bytes, how } = hostileBytes(m.input, rng, pool);
  return { method: m.name, bytes, how, stream: null };
}

function codeName(code: number): string {
  return grpc.status[code] ?? `code ${code}`;
}

/** Learns ids from successful answers so later requests can name real objects. */
function learn(method: string, res: Buffer, pool: IdPool): void {
  if (method === "ListDevices") {
    const ids = fromBinary(ListDevicesResponseSchema, res).devices.map((d) => d.id);
    if (ids.length > 0) pool.deviceIds = [...new Set([...pool.deviceIds, ...ids])];
  } else if (method === "OpenDevice") {
    const r = fromBinary(OpenDeviceResponseSchema, res);
    pool.deviceFileIds.push(r.deviceFileId);
    for (const rc of r.regions)
      if (rc.region && !pool.regionIndexes.includes(rc.region.index))
        pool.regionIndexes.push(rc.region.index);
    pool.cookies.push(...r.regions.map((rc) => rc.cookie));
  } else if (method === "CreateMapping") {
    const c = fromBinary(CreateMappingResponseSchema, res).mapping?.cookie;
    if (c !== undefined) pool.cookies.push(c);
  }
  pool.deviceFileIds = pool.deviceFileIds.slice(-16);
  pool.cookies = pool.cookies.slice(-64);
}

/** One raw connection to broker.sock (its own subchannel, hence its own brokerd session). */
export class RawBroker {
  readonly client: grpc.Client;

  constructor(readonly socket: string) {
    this.client = new grpc.Client(`unix:${socket}`, grpc.credentials.createInsecure(), {
      "grpc.use_local_subchannel_pool": 1,
      "grpc.max_send_message_length": -1,
    });
  }

  unary(method: string, bytes: Buffer): Promise<{ err: grpc.ServiceError | null; res: Buffer | undefined }> {
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(
        `/${BrokerService.typeName}/${method}`,
        identity,
        identity,
        bytes,
        new grpc.Metadata(),
        { deadline: new Date(Date.now() + CALL_TIMEOUT_MS) },
        (err, res) => resolve({ err, res }),
      );
    });
  }

  /** Writes the messages on a Lease stream, half-closes, and waits for the final status. */
  lease(messages: Buffer[]): Promise<{ code: number; details: string }> {
    return new Promise((resolve) => {
      const call = this.client.makeBidiStreamRequest(
        `/${BrokerService.typeName}/Lease`,
        identity,
        identity,
        new grpc.Metadata(),
        {
          deadline: new Date(Date.now() + CALL_TIMEOUT_MS),
        },
      );
      call.on("data", () => {});
      call.on("error", () => {});
      call.on("status", (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details }));
      for (const m of messages) call.write(m);
      call.end();
    });
  }

  close(): void {
    this.client.close();
  }
}

export async function runGrpcCase(conn: RawBroker, c: GrpcCase, pool: IdPool): Promise<GrpcResult> {
  const problems: string[] = [];
  if (c.stream) {
    const ok = c.stream.every((b) => decodable(LEASE.input, b));
    const s = await conn.lease(c.stream);
    // The server ends a lease whose client half-closed; OK or CANCELLED is normal, a deadline is not.
    if (s.code === grpc.status.DEADLINE_EXCEEDED)
      problems.push("Lease: brokerd did not end the stream after half-close");
    return { code: codeName(s.code), decodable: ok, details: s.details, problems };
  }
  const method = UNARY_METHODS.find((m) => m.name === c.method)!;
  const isDecodable = decodable(method.input, c.bytes);
  const { err, res } = await conn.unary(c.method, c.bytes);
  if (err) {
    if (err.code === grpc.status.DEADLINE_EXCEEDED)
      problems.push(`${c.method}: no answer in ${CALL_TIMEOUT_MS} ms`);
    return { code: codeName(err.code), decodable: isDecodable, details: err.details, problems };
  }
  try {
    fromBinary(method.output, res!);
    learn(c.method, res!, pool);
  } catch (e) {
    problems.push(`${c.method}: OK answer is not a ${method.output.typeName}: ${(e as Error).message}`);
  }
  return { code: "OK", decodable: isDecodable, details: "", problems };
}

export function describeGrpcCase(c: GrpcCase): unknown {
  return { ...c, bytes: c.bytes.toString("hex"), stream: c.stream?.map((b) => b.toString("hex")) ?? null };
}

export function parseGrpcCase(o: {
  method: string;
  bytes: string;
  how: string[];
  stream: string[] | null;
}): GrpcCase {
  return {
    ...o,
    bytes: Buffer.from(o.bytes, "hex"),
    stream: o.stream?.map((b) => Buffer.from(b, "hex")) ?? null,
  };
}
