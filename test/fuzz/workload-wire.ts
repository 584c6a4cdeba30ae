// workload-wire.ts: what the fuzzer's runner needs to speak the workload protocol (workload.proto)
// on fd.sock: encoding requests, the prelude's open, the SENTINEL device-file id that case frames
// carry until the runner knows the real one (a 5-byte varint either way, so no frame changes
// length), and checkWorkloadReply, the oracle of one frame from brokerd. Generating cases is
// workload.ts's; running them is fd-channel.ts's.
//
// What the spec promises and checkWorkloadReply checks: every frame brokerd sends is a
// WorkloadReply with a known status; one that is not OK carries a message and no fd; an OK reply
// names its kind, and carries an fd only for a grant (one) or a batch (one per granted item);
// events are told apart by `event` and answer nothing. (That a hello not answered OK is followed
// by the connection's close is the runner's check.)
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type FdReply,
  FdStatus,
  Layout,
  WorkloadReplySchema,
  WorkloadRequestSchema,
} from "@vfio-broker/proto";
import { encodeVarint } from "./mutate.js";

/** The device_file_id a case's frames carry until the runner knows the real one. */
export const SENTINEL = 0x3_dead_beefn;
const SENTINEL_BYTES = encodeVarint(SENTINEL);

/** What the hello of a case without a prelude must get: OK, an error (then close), or either. */
export type HelloExpect = "OK" | "error" | "any";

/** How a workload case starts (FdCase.workload). */
export interface WorkloadPlan {
  /** Open a session first (a valid hello, then open `open` if set), each answered before the writes. */
  prelude: boolean;
  open: string;
  /** Without a prelude the writes start with a hello: what it must get. */
  hello: HelloExpect;
}

export type RequestInit = Parameters<typeof create<typeof WorkloadRequestSchema>>[1];

export function encodeRequest(init: RequestInit): Buffer {
  return Buffer.from(toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, init)));
}

/** The prelude's hello and open. */
export const preludeHello = (): Buffer =>
  encodeRequest({ kind: { case: "hello", value: { version: 1, clientName: "fuzz-prelude" } } });
export const openFrame = (deviceId: string): Buffer =>
  encodeRequest({ kind: { case: "openDevice", value: { deviceId, layout: Layout.COMPACT } } });

/** The 5-byte varint of id (ids below 2^35), to take SENTINEL's place. */
function padded(id: bigint): Buffer {
  const b = Buffer.alloc(5);
  for (let i = 0; i < 4; i++) b[i] = Number((id >> BigInt(7 * i)) & 0x7fn) | 0x80;
  b[4] = Number((id >> 28n) & 0x7fn);
  return b;
}

/** Replaces every SENTINEL varint in b with the real device file id. */
export function patchSentinel(b: Buffer, id: bigint): Buffer {
  const out = Buffer.from(b);
  const real = padded(id);
  for (let at = out.indexOf(SENTINEL_BYTES); at >= 0; at = out.indexOf(SENTINEL_BYTES, at + 5))
    real.copy(out, at);
  return out;
}

/** Fds an OK reply may carry: one for a grant, one per granted item of a batch, none otherwise. */
function fdsAllowed(kind: string | undefined, value: unknown): number {
  if (kind === "grant") return 1;
  if (kind !== "batch") return 0;
  return (value as FdReply).items.filter((i) => i.status === FdStatus.OK && i.length > 0n).length;
}

/**
 * Decodes and checks one frame from brokerd on a workload connection; returns its tally column
 * ("OK/kind", "STATUS" or "STATUS/grpc_code"; "event/kind" for events). Every fd that came with it is the caller's
 * to close.
 */
export function checkWorkloadReply(
  r: { data: Buffer; fds: number[] },
  problems: string[],
): { column: string; event: boolean; ok: boolean } {
  let reply: ReturnType<typeof fromBinary<typeof WorkloadReplySchema>>;
  try {
    reply = fromBinary(WorkloadReplySchema, r.data);
  } catch (e) {
    problems.push(`reply is not a WorkloadReply: ${(e as Error).message}`);
    return { column: "UNDECODABLE", event: false, ok: false };
  }
  const name = FdStatus[reply.status];
  if (name === undefined || reply.status === FdStatus.UNSPECIFIED)
    problems.push(`workload reply with status ${reply.status}`);
  const k = reply.kind;
  if (k.case === "event") {
    if (r.fds.length > 0) problems.push(`an event came with ${r.fds.length} fds`);
    return { column: `event/${k.value.kind.case}`, event: true, ok: true };
  }
  let column = `${name ?? reply.status}${reply.grpcCode ? `/${reply.grpcCode}` : ""}`;
  if (reply.status !== FdStatus.OK) {
    // Counted, and judged by main.ts (required with FUZZ_STRICT_STATUS=1): a refusal says why.
    if (reply.message === "") column += " (no message)";
    if (r.fds.length > 0) problems.push(`a ${column} workload reply came with ${r.fds.length} fds`);
    return { column, event: false, ok: false };
  }
  if (k.case === undefined) problems.push("an OK workload reply names no kind");
  column = `OK/${k.case}`;
  const allowed = fdsAllowed(k.case, k.value);
  if (r.fds.length !== allowed)
    problems.push(`an OK ${k.case} reply came with ${r.fds.length} fds (expected ${allowed})`);
  return { column, event: false, ok: true };
}
