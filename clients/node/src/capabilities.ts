// capabilities.ts: owns what a hello tells the client about brokerd and about itself: the
// Capabilities (from a gRPC HelloResponse or a workload welcome, and the gRPC-only ones filled in
// later from a side session's Hello) and the Identity the kernel gives this process. Pure
// conversion: no I/O, no state.
import type { HelloResponse, Identity as PbIdentity, WorkloadWelcome } from "@vfio-broker/proto";
import {
  type AttributeName,
  attributeFromPb,
  type BackingName,
  backingFromPb,
  type LayoutName,
  layoutFromPb,
} from "./convert.js";
import { MAX_BATCH_ITEMS } from "./fd-channel.js";

export interface Identity {
  uid: number;
  gid: number;
  pid: number;
  cgroup: string;
  pidfdSource: string;
  /** From the cgroup path, "" when it names none or a user could have made it: the 64-hex container id, */
  containerId: string;
  /** "docker", "podman", "containerd", "cri-o" or "kubepods", */
  containerRuntime: string;
  /** the Kubernetes pod UID and the pod's QoS class. */
  podUid: string;
  qosClass: string;
}

/**
 * What brokerd offers. On the workload transport only pageSize, maxFdsPerMessage, fdGrants,
 * fdBatches and maxFdBatchItems come from the welcome; the others are the gRPC Hello's, known
 * (and filled in here) once a gRPC-only call opened the side session, empty or 0 until then.
 */
export interface Capabilities {
  maxFdsPerMessage: number;
  layouts: LayoutName[];
  attributes: AttributeName[];
  backings: BackingName[];
  ticketTtlMs: number;
  maxAccessBytes: number;
  fdSocketPath: string;
  /** The fd socket's name relative to the broker socket's directory ("" if elsewhere). */
  fdSocketName: string;
  /** brokerd takes grants and releases on the fd channel (one exchange per grant, no gRPC call). */
  fdGrants: boolean;
  /** ... and batches of them (FdBatch), up to maxFdBatchItems items each. */
  fdBatches: boolean;
  maxFdBatchItems: number;
  pageSize: number;
}

export function capabilitiesFromHello(hello: HelloResponse): Capabilities {
  const c = hello.capabilities;
  return {
    maxFdsPerMessage: c?.maxFdsPerMessage ?? 1,
    layouts: (c?.layouts ?? []).map(layoutFromPb),
    attributes: (c?.attributes ?? [])
      .map(attributeFromPb)
      .filter((a): a is AttributeName => a !== "unspecified"),
    backings: (c?.backings ?? []).map(backingFromPb),
    ticketTtlMs: c?.ticketTtlMs ?? 0,
    maxAccessBytes: c?.maxAccessBytes ?? 0,
    fdSocketPath: c?.fdSocketPath ?? "",
    fdSocketName: c?.fdSocketName ?? "",
    fdGrants: c?.fdGrants ?? false,
    fdBatches: c?.fdBatches ?? false,
    maxFdBatchItems: Math.min(c?.maxFdBatchItems ?? 0, MAX_BATCH_ITEMS),
    pageSize: c?.pageSize ?? 4096,
  };
}

/** A welcome's capabilities: the gRPC-only ones empty until fillGrpcOnly. */
export function capabilitiesFromWelcome(w: WorkloadWelcome): Capabilities {
  return {
    maxFdsPerMessage: w.limits?.maxFdsPerReply ?? 1,
    layouts: [],
    attributes: [],
    backings: [],
    ticketTtlMs: 0,
    maxAccessBytes: 0,
    fdSocketPath: "",
    fdSocketName: "",
    fdGrants: true,
    fdBatches: true,
    maxFdBatchItems: Math.min(w.limits?.maxBatchItems ?? 0, MAX_BATCH_ITEMS),
    pageSize: Number(w.pageSize || 4096n),
  };
}

/** Fills in `caps` (a welcome's) with the capabilities only a gRPC Hello carries. */
export function fillGrpcOnly(caps: Capabilities, hello: HelloResponse): void {
  const { pageSize, maxFdBatchItems, maxFdsPerMessage, fdGrants, fdBatches, ...grpcOnly } =
    capabilitiesFromHello(hello);
  Object.assign(caps, grpcOnly);
}

export function identityFromPb(id: PbIdentity | undefined): Identity {
  return {
    uid: id?.uid ?? 0,
    gid: id?.gid ?? 0,
    pid: id?.pid ?? 0,
    cgroup: id?.cgroup ?? "",
    pidfdSource: id?.pidfdSource ?? "",
    containerId: id?.containerId ?? "",
    containerRuntime: id?.containerRuntime ?? "",
    podUid: id?.podUid ?? "",
    qosClass: id?.qosClass ?? "",
  };
}
