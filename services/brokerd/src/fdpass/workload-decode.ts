// What a frame on a workload connection says (proto/vfiobroker/v1/workload.proto), before anything
// is done with it: the frame decoded as a WorkloadRequest and checked against the protocol's
// limits (every string, rpc/strings.ts; at most MAX_CAPABILITIES capability names), or the message
// that says what is wrong with it. Any bytes give one or the other, never an exception
// (workload-decode.property.test.ts). Pure: no I/O, no session, no broker; serving the request is
// fdpass/workload-adapter.ts's.
import { fromBinary } from "@bufbuild/protobuf";
import { type WorkloadHello, type WorkloadRequest, WorkloadRequestSchema } from "@vfio-broker/proto";
import { checkStrings } from "../rpc/strings.js";
import { fastRequest } from "./workload-fast-decode.js";

/** Capability names a hello may carry. */
export const MAX_CAPABILITIES = 16;

type Kind = NonNullable<WorkloadRequest["kind"]["case"]>;

/** A request after the hello: what it asks (never a hello), or why it is refused. */
export type Decoded =
  | { ok: true; kind: Exclude<WorkloadRequest["kind"], { case: "hello" | undefined }> }
  | { ok: false; message: string };

function decode(frame: Uint8Array): WorkloadRequest | undefined {
  try {
    return fromBinary(WorkloadRequestSchema, frame);
  } catch {
    return undefined;
  }
}

/** The first frame's hello, if it is one (the connection then speaks this protocol). */
export function helloOf(frame: Uint8Array): WorkloadHello | undefined {
  const req = decode(frame);
  return req?.kind.case === "hello" ? req.kind.value : undefined;
}

/** The request kind a frame holds, if it is a WorkloadRequest that names one. */
export function kindOf(frame: Uint8Array): Kind | undefined {
  return decode(frame)?.kind.case;
}

/** Why a hello is refused (a limit it breaks), or undefined. */
export function helloProblem(h: WorkloadHello): string | undefined {
  try {
    checkStrings(h);
  } catch (e) {
    return (e as Error).message;
  }
  if (h.capabilities.length > MAX_CAPABILITIES)
    return `a hello names at most ${MAX_CAPABILITIES} capabilities, this one ${h.capabilities.length}`;
  return undefined;
}

/** Why a WorkloadRequest without a kind is not served: FdRequest's fields (1-15) say it was one. */
export function noRequest(req: WorkloadRequest): string {
  return req.$unknown?.some((f) => f.no >= 1 && f.no <= 15)
    ? "an FdRequest (ticket protocol) on a workload connection: this connection speaks the workload protocol since its hello; present tickets on a connection of their own, or grant with WorkloadRequest.grant"
    : "the WorkloadRequest names no request this brokerd knows (workload protocol version 1)";
}

/**
 * A frame after the hello: its request, or the BAD_REQUEST message for it. A plain grant or release
 * is read straight off the wire (workload-fast-decode.ts), to the same result.
 */
export function decodeRequest(frame: Uint8Array): Decoded {
  const fast = fastRequest(frame);
  return fast ? { ok: true, kind: fast } : decodeGeneral(frame);
}

/** decodeRequest through protobuf-es and the string walk, for any frame. */
export function decodeGeneral(frame: Uint8Array): Decoded {
  const req = decode(frame);
  if (!req) return { ok: false, message: "the frame is not a WorkloadRequest protobuf" };
  try {
    // Ids and tokens within their limits (rpc/strings.ts), before anything else.
    checkStrings(req);
  } catch (e) {
    return { ok: false, message: (e as Error).message };
  }
  const k = req.kind;
  if (k.case === "hello") return { ok: false, message: "a hello is the first frame only" };
  if (k.case === undefined) return { ok: false, message: noRequest(req) };
  return { ok: true, kind: k };
}
