// ClaimBook: the Kubernetes ResourceClaims the node agent has bound (AdminService.BindClaim): which
// pods hold which devices. The policy reads it through ClaimView (a rule with match.claims grants a
// bound claim's devices to exactly its pods); state/ records it. Owns the bounds on what a caller
// of BindClaim can make brokerd hold (docs/security.md §2) and the checks of every field. Pure: no
// I/O, no clocks; never decides a request (policy/evaluate.ts does) and never revokes (the caller
// does, with what bind/unbind report changed).
import type { ClaimView } from "../policy/types.js";

/** One bound claim, as BindClaim gives it and the state store records it. */
export interface ClaimRec {
  uid: string;
  namespace: string;
  name: string;
  pods: string[];
  devices: string[];
}

export const MAX_CLAIMS = 1024;
/** The API server's bound on a claim's status.reservedFor (ResourceClaimReservedForMaxSize). */
export const MAX_PODS_PER_CLAIM = 256;
/** The API server's bound on a claim's allocation results (AllocationResultsMaxSize). */
export const MAX_DEVICES_PER_CLAIM = 32;
const MAX_DEVICE_ID = 64;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Static and mirror pods have 32 hex digits (a hash) for a UID (identity/container.ts).
const POD_UID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$/;
const DNS_LABEL = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$/;
const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;

/** A field of a claim that is not acceptable: which one and why (INVALID_ARGUMENT). */
export class ClaimError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

const show = (s: string) => JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}...` : s);

function list(
  field: string,
  values: readonly string[],
  max: number,
  ok: (v: string) => boolean,
  what: string,
) {
  if (values.length === 0)
    throw new ClaimError(field, `${field} is empty: a claim binds at least one ${what}`);
  if (values.length > max)
    throw new ClaimError(field, `${field} has ${values.length} entries; at most ${max} per claim`);
  const bad = values.find((v) => !ok(v));
  if (bad !== undefined) throw new ClaimError(field, `${show(bad)} in ${field} is not a ${what}`);
  return [...new Set(values)].sort();
}

/** The claim with its lists deduplicated and sorted, or ClaimError naming the first bad field. */
export function checkClaim(c: ClaimRec): ClaimRec {
  if (!UUID.test(c.uid))
    throw new ClaimError("claim_uid", `claim_uid ${show(c.uid)} is not a UUID (the claim's metadata.uid)`);
  if (!DNS_LABEL.test(c.namespace))
    throw new ClaimError("namespace", `namespace ${show(c.namespace)} is not a DNS label (1..63 characters)`);
  if (!DNS_SUBDOMAIN.test(c.name))
    throw new ClaimError(
      "claim_name",
      `claim_name ${show(c.name)} is not a DNS subdomain (1..253 characters)`,
    );
  const pods = list(
    "pod_uids",
    c.pods,
    MAX_PODS_PER_CLAIM,
    (v) => POD_UID.test(v),
    "pod UID (metadata.uid, lowercase, with dashes)",
  );
  const devices = list(
    "device_ids",
    c.devices,
    MAX_DEVICES_PER_CLAIM,
    (v) => v.length <= MAX_DEVICE_ID && DEVICE_ID.test(v),
    "device id",
  );
  return { uid: c.uid, namespace: c.namespace, name: c.name, pods, devices };
}

function same(a: ClaimRec, b: ClaimRec): boolean {
  return (
    a.namespace === b.namespace &&
    a.name === b.name &&
    a.pods.join(",") === b.pods.join(",") &&
    a.devices.join(",") === b.devices.join(",")
  );
}

/** What a bind or unbind changed: the pods whose grants the caller must review (empty: none). */
export interface ClaimChange {
  changed: boolean;
  /** Pods that lost a device (all of the old binding's pods when a device was dropped). */
  review: string[];
}

export class ClaimBook implements ClaimView {
  private readonly claims = new Map<string, ClaimRec>();
  /** pod UID -> device id -> how many of the pod's claims bind it */
  private readonly byPod = new Map<string, Map<string, number>>();

  get size(): number {
    return this.claims.size;
  }

  all(): ClaimRec[] {
    return [...this.claims.values()];
  }

  get(uid: string): ClaimRec | undefined {
    return this.claims.get(uid);
  }

  devicesOf(podUid: string): ReadonlySet<string> | undefined {
    const m = this.byPod.get(podUid);
    return m ? new Set(m.keys()) : undefined;
  }

  /** Whether a bind of c (checked by checkClaim) fits the bounds; the message if not. */
  refusal(c: ClaimRec): string | undefined {
    if (!this.claims.has(c.uid) && this.claims.size >= MAX_CLAIMS)
      return `${MAX_CLAIMS} claims are bound already; unbind claims whose pods are gone`;
    return undefined;
  }

  /** Binds c (checked by checkClaim, fits refusal()), replacing what its uid bound before. */
  bind(c: ClaimRec): ClaimChange {
    const old = this.claims.get(c.uid);
    if (old && same(old, c)) return { changed: false, review: [] };
    if (old) this.index(old, -1);
    this.claims.set(c.uid, c);
    this.index(c, +1);
    if (!old) return { changed: true, review: [] };
    const lostDevice = old.devices.some((d) => !c.devices.includes(d));
    const review = lostDevice ? old.pods : old.pods.filter((p) => !c.pods.includes(p));
    return { changed: true, review };
  }

  unbind(uid: string): ClaimChange {
    const old = this.claims.get(uid);
    if (!old) return { changed: false, review: [] };
    this.claims.delete(uid);
    this.index(old, -1);
    return { changed: true, review: old.pods };
  }

  private index(c: ClaimRec, by: 1 | -1): void {
    for (const pod of c.pods) {
      const m = this.byPod.get(pod) ?? new Map<string, number>();
      for (const d of c.devices) {
        const n = (m.get(d) ?? 0) + by;
        if (n > 0) m.set(d, n);
        else m.delete(d);
      }
      if (m.size > 0) this.byPod.set(pod, m);
      else this.byPod.delete(pod);
    }
  }
}
