// Reads a resource.k8s.io/v1 ResourceClaim (as the API server returns it) for the DRA plugin:
// checks it is the claim the kubelet named, takes the allocation results for this driver and the
// pods it is reserved for, and maps each result to a device brokerd serves on this node. Pure: the
// claim object comes in, a PreparedClaim or the per-claim error message goes out.
import type { PreparedClaim, PreparedDevice } from "./checkpoint.js";
import { DRIVER, isUid, MAX_DEVICES_PER_CLAIM, MAX_PODS_PER_CLAIM } from "./names.js";

export interface ClaimRef {
  namespace: string;
  uid: string;
  name: string;
}

interface AllocationResult {
  request?: unknown;
  driver?: unknown;
  pool?: unknown;
  device?: unknown;
}

interface ResourceClaimDoc {
  metadata?: { uid?: unknown; name?: unknown; namespace?: unknown; deletionTimestamp?: unknown };
  status?: {
    allocation?: { devices?: { results?: AllocationResult[] } };
    reservedFor?: { resource?: unknown; uid?: unknown; apiGroup?: unknown }[];
  };
}

export type ClaimReading = { ok: Omit<PreparedClaim, "cdiDeviceIds"> } | { error: string };

/**
 * What `doc` allocates on this node. `pool` is this node's pool name; `devices` maps the
 * ResourceSlice device names this node publishes to brokerd's device ids.
 */
export function readClaim(
  ref: ClaimRef,
  doc: unknown,
  pool: string,
  devices: Map<string, string>,
): ClaimReading {
  const c = doc as ResourceClaimDoc;
  const where = `ResourceClaim ${ref.namespace}/${ref.name}`;
  if (c?.metadata?.uid !== ref.uid) {
    return {
      error: `${where} has uid ${String(c?.metadata?.uid)}, not ${ref.uid} (deleted and created again?)`,
    };
  }
  const results = c.status?.allocation?.devices?.results;
  if (!Array.isArray(results)) return { error: `${where} is not allocated` };
  const ours = results.filter((r) => r?.driver === DRIVER);
  if (ours.length === 0) return { error: `${where} has no allocation result for driver ${DRIVER}` };
  if (ours.length > MAX_DEVICES_PER_CLAIM) {
    return {
      error: `${where} allocates ${ours.length} devices; at most ${MAX_DEVICES_PER_CLAIM} are accepted`,
    };
  }
  const prepared: PreparedDevice[] = [];
  for (const r of ours) {
    if (typeof r.device !== "string" || typeof r.pool !== "string" || typeof r.request !== "string") {
      return { error: `${where} has a malformed allocation result` };
    }
    const brokerId = devices.get(r.device);
    if (r.pool !== pool || brokerId === undefined) {
      return {
        error: `${where} allocates device ${r.device.slice(0, 64)} of pool ${r.pool.slice(0, 64)}, which this node (pool ${pool}) does not have`,
      };
    }
    prepared.push({ request: r.request, pool: r.pool, device: r.device, brokerId });
  }
  const pods = (c.status?.reservedFor ?? []).filter((p) => p?.resource === "pods" && !p.apiGroup);
  if (pods.length === 0) return { error: `${where} is reserved for no pod` };
  if (pods.length > MAX_PODS_PER_CLAIM)
    return { error: `${where} is reserved for more than ${MAX_PODS_PER_CLAIM} pods` };
  const podUids: string[] = [];
  for (const p of pods) {
    if (typeof p.uid !== "string" || !isUid(p.uid))
      return { error: `${where} names a pod whose uid is not a UUID` };
    podUids.push(p.uid);
  }
  return { ok: { uid: ref.uid, namespace: ref.namespace, name: ref.name, podUids, devices: prepared } };
}
