// The DRA plugin's work for NodePrepareResources / NodeUnprepareResources, claim by claim:
// prepare reads the claim from the API server, checks its allocation is for devices of this node,
// writes the claim's transient CDI spec, binds the claim's pods to its devices in brokerd and
// records it in the checkpoint; unprepare unbinds, removes the spec and forgets it. Both are
// idempotent, and a failure of one claim is that claim's error string (the API's per-claim error),
// never the whole call's. Owns the order of those steps; the gRPC framing is dra-server.ts's.
import type { ApiServer } from "./apiserver.js";
import { ApiError } from "./apiserver.js";
import type { ClaimBinder } from "./binder.js";
import { cdiDeviceId, claimSpec } from "./cdi-spec.js";
import type { CdiStore } from "./cdi-store.js";
import type { Checkpoint, PreparedClaim } from "./checkpoint.js";
import { type ClaimRef, readClaim } from "./claim.js";
import { CLAIM_CDI_KIND, claimRefError, MAX_PREPARED_CLAIMS } from "./names.js";

export interface DraDriverDeps {
  api: Pick<ApiServer, "getClaim">;
  binder: ClaimBinder;
  cdi: CdiStore;
  checkpoint: Checkpoint;
  /** This node's pool name (the node name). */
  pool: string;
  /** The host's workload socket directory, mounted read-only into the claim's containers. */
  workloadDir: string;
  /** The ResourceSlice device names this node publishes, to brokerd device ids (slice.ts). */
  devices: () => Map<string, string>;
}

export type PrepareResult = { claim: PreparedClaim } | { error: string };

function message(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).slice(0, 500);
}

export class DraDriver {
  /** Claims being worked on, so that two calls for one claim run one after the other. */
  private readonly busy = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: DraDriverDeps) {}

  prepare(ref: ClaimRef): Promise<PrepareResult> {
    return this.serial(ref.uid, () => this.prepareNow(ref));
  }

  /** "" on success (also for a claim this node never prepared), else the claim's error. */
  unprepare(ref: ClaimRef): Promise<string> {
    return this.serial(ref.uid, () => this.unprepareNow(ref));
  }

  private async serial<T>(uid: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.busy.get(uid) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.busy.set(uid, settled);
    try {
      return await next;
    } finally {
      if (this.busy.get(uid) === settled) this.busy.delete(uid);
    }
  }

  private async prepareNow(ref: ClaimRef): Promise<PrepareResult> {
    const bad = claimRefError(ref);
    if (bad) return { error: bad };
    const d = this.deps;
    const done = d.checkpoint.get(ref.uid);
    if (done) {
      // Already prepared (a repeated call, or a call after our restart): make sure the spec and the
      // binding are still in place, and answer as the first time.
      try {
        d.cdi.write(claimSpec(done.uid, d.workloadDir));
        await d.binder.bind(bindingOf(done));
        return { claim: done };
      } catch (e) {
        return { error: `preparing ${ref.namespace}/${ref.name} again: ${message(e)}` };
      }
    }
    if (!d.checkpoint.hasRoom(ref.uid)) {
      return { error: `this node already has ${MAX_PREPARED_CLAIMS} prepared claims (the limit)` };
    }
    let doc: unknown;
    try {
      doc = await d.api.getClaim(ref.namespace, ref.name);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404)
        return { error: `ResourceClaim ${ref.namespace}/${ref.name} not found` };
      return { error: `reading ResourceClaim ${ref.namespace}/${ref.name}: ${message(e)}` };
    }
    const read = readClaim(ref, doc, d.pool, d.devices());
    if ("error" in read) return read;
    const claim: PreparedClaim = { ...read.ok, cdiDeviceIds: [cdiDeviceId(CLAIM_CDI_KIND, ref.uid)] };
    try {
      d.cdi.write(claimSpec(claim.uid, d.workloadDir));
      await d.binder.bind(bindingOf(claim));
      d.checkpoint.put(claim);
    } catch (e) {
      return { error: `preparing ${ref.namespace}/${ref.name}: ${message(e)}` };
    }
    return { claim };
  }

  /**
   * Re-reads each prepared claim and rebinds it in brokerd when the pods it is reserved for
   * changed: the kubelet prepares a claim once per node, so a second pod sharing it is seen only
   * here. A claim the API server no longer has, or whose allocation changed, is left as it is
   * (the kubelet unprepares it). Returns the UIDs rebound.
   */
  async refreshPods(): Promise<string[]> {
    const rebound: string[] = [];
    for (const c of this.deps.checkpoint.all()) {
      await this.serial(c.uid, async () => {
        const cur = this.deps.checkpoint.get(c.uid);
        if (!cur) return;
        let doc: unknown;
        try {
          doc = await this.deps.api.getClaim(cur.namespace, cur.name);
        } catch {
          return;
        }
        const read = readClaim(cur, doc, this.deps.pool, this.deps.devices());
        if ("error" in read || sameList(read.ok.podUids, cur.podUids)) return;
        const next = { ...cur, podUids: read.ok.podUids };
        await this.deps.binder.bind(bindingOf(next));
        this.deps.checkpoint.put(next);
        rebound.push(cur.uid);
      });
    }
    return rebound;
  }

  /**
   * Binds again, in brokerd, every checkpointed claim whose binding brokerd does not have or has
   * with other pods or devices: brokerd keeps bindings across its own restarts, but a node reboot
   * sets its state store aside while this checkpoint keeps the claims, and the kubelet may never
   * call prepare again. Run at agent start and on every refresh tick. Throws when brokerd cannot be
   * asked (the caller logs it and tries again at the next tick); a claim whose bind fails is
   * returned in `failed` with its error, and tried again next time.
   */
  async reconcile(): Promise<{ rebound: string[]; failed: { uid: string; error: string }[] }> {
    const held = new Map((await this.deps.binder.list()).map((x) => [x.claimUid, x]));
    const rebound: string[] = [];
    const failed: { uid: string; error: string }[] = [];
    for (const c of this.deps.checkpoint.all()) {
      await this.serial(c.uid, async () => {
        const cur = this.deps.checkpoint.get(c.uid);
        if (!cur) return;
        const want = bindingOf(cur);
        const has = held.get(cur.uid);
        if (has && sameList(has.podUids, want.podUids) && sameList(has.deviceIds, want.deviceIds)) return;
        try {
          await this.deps.binder.bind(want);
          rebound.push(cur.uid);
        } catch (e) {
          failed.push({ uid: cur.uid, error: message(e) });
        }
      });
    }
    return { rebound, failed };
  }

  private async unprepareNow(ref: ClaimRef): Promise<string> {
    if (claimRefError(ref)) return claimRefError(ref);
    const d = this.deps;
    try {
      // In this order whether or not the checkpoint knows the claim: a crash between our spec write
      // and our checkpoint write leaves a spec and a binding that only the UID names.
      await d.binder.unbind(ref.uid);
      d.cdi.remove(CLAIM_CDI_KIND, ref.uid);
      d.checkpoint.delete(ref.uid);
      return "";
    } catch (e) {
      return `unpreparing ${ref.namespace}/${ref.name}: ${message(e)}`;
    }
  }
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && [...a].sort().join() === [...b].sort().join();
}

function bindingOf(c: PreparedClaim) {
  return {
    claimUid: c.uid,
    namespace: c.namespace,
    claimName: c.name,
    podUids: c.podUids,
    deviceIds: c.devices.map((x) => x.brokerId),
  };
}
