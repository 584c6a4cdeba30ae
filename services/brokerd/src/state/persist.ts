// Persister: records every change of grant state in the StateStore as the Broker makes it. It
// listens to the Broker's events, which fire synchronously inside the call that made the change,
// so each record is written before the reply that depends on it. It must be attached before any
// other listener: a failed write of a creation (session, device file, mapping) throws out of the
// event, and the Broker undoes the creation and refuses the call. A failed write of a release is
// logged and counted instead: the store then keeps a booking brokerd dropped, which a restart
// reconciles (it can only over-book, never grant a page twice).
import type { Broker } from "../broker.js";
import type { Mapping } from "../grants/device-file.js";
import type { Hold } from "../grants/holds.js";
import { logLimited } from "../log.js";
import type { HoldRec, MappingRec, SessionRec } from "./records.js";
import type { StateStore } from "./store.js";

export function mappingRec(m: Mapping): MappingRec {
  return {
    df: String(m.deviceFile.id),
    cookie: String(m.cookie),
    region: m.region.index,
    offset: String(m.regionOffset),
    length: String(m.length),
    requested: m.requestedAttribute,
    effective: m.effectiveAttribute,
    fallbackReason: m.fallbackReason,
    prot: m.prot,
    kind: m.backing.kind,
    state: m.state,
    // The live ticket (the broker clears a redeemed one): pending, or another reference's.
    ticket: m.ticket,
    expiresAt: m.ticketExpiresAt,
    rule: m.rule,
    requestId: m.requestId,
    createdAt: m.createdAt,
    refs: m.refs,
  };
}

export function holdRec(h: Hold): HoldRec {
  return {
    id: h.id,
    pid: h.pid,
    startTime: h.startTime,
    uid: h.uid,
    session: h.sessionId,
    df: String(h.deviceFileId),
    cookie: String(h.cookie),
    device: h.deviceId,
    region: h.regionIndex,
    regionName: h.regionName,
    offset: String(h.offset),
    length: String(h.length),
    attribute: h.attribute,
    prot: h.prot,
    kind: h.kind,
    refs: h.refs,
    quotaKeys: h.quotaKeys,
    rule: h.rule,
    reason: h.reason,
    since: h.since,
    enforceAt: h.enforceAt,
    enforceBy: h.enforceBy,
  };
}

export class Persister {
  /** Writes that failed (releases only; failed creations were refused). */
  failures = 0;
  /** Once frozen (hand-over, stop keeping grants) nothing more is written: the state is final. */
  frozen = false;

  constructor(
    private readonly store: StateStore,
    broker: Broker,
  ) {
    // A batch's records go in one write; a failure of it is the batch's (Broker.batch undoes).
    broker.addRecorder({ cork: () => store.cork(), uncork: () => store.uncork() });
    const must = (f: () => void) => {
      if (!this.frozen) f();
    };
    const may = (what: string, f: () => void) => {
      if (this.frozen) return;
      try {
        f();
      } catch (e) {
        this.failures++;
        logLimited(
          "state.write",
          `vfio-brokerd: state store: recording ${what} failed: ${(e as Error).message}`,
        );
      }
    };
    broker.on("session.open", (s) =>
      must(() => {
        const id = s.identity;
        const rec: SessionRec = {
          id: s.id,
          tokenHash: s.tokenHash,
          uid: id.uid,
          gid: id.gid,
          pid: id.pid,
          startTime: id.startTime,
          cgroup: id.cgroup,
          groups: id.groups,
          pidfdSource: id.pidfdSource,
          clientName: s.clientName,
          openedAt: s.connectedAt,
        };
        store.append({ t: "session.open", s: rec });
      }),
    );
    broker.on("session.end", (s) => may("a session end", () => store.append({ t: "session.end", id: s.id })));
    broker.on("devicefile.open", (df) =>
      must(() =>
        store.append({
          t: "df.open",
          d: {
            id: String(df.id),
            session: df.sessionId,
            device: df.device.id,
            layout: df.layout,
            openedAt: df.openedAt,
            requestId: df.requestId,
          },
        }),
      ),
    );
    broker.on("devicefile.close", (df) =>
      may("a device-file close", () => store.append({ t: "df.close", id: String(df.id) })),
    );
    broker.on("mapping.create", (m) => must(() => store.append({ t: "map.create", m: mappingRec(m) })));
    // Created delivered (the fast path): one record says both, before the fd is sent.
    broker.on("mapping.grant", (m) => must(() => store.append({ t: "map.create", m: mappingRec(m) })));
    broker.on("mapping.update", (m) =>
      may("an attribute change", () =>
        store.append({
          t: "map.update",
          df: String(m.deviceFile.id),
          cookie: String(m.cookie),
          requested: m.requestedAttribute,
          effective: m.effectiveAttribute,
          fallbackReason: m.fallbackReason,
          kind: m.backing.kind,
          rule: m.rule,
        }),
      ),
    );
    const refs = (m: Mapping) => ({
      t: "map.refs" as const,
      df: String(m.deviceFile.id),
      cookie: String(m.cookie),
      refs: m.refs,
      ticket: m.ticket,
      expiresAt: m.ticketExpiresAt,
    });
    // A new reference is a creation (its failure is refused); a dropped one is a release.
    broker.on("mapping.refs", (m, how) =>
      how === "add"
        ? must(() => store.append(refs(m)))
        : may("a reference release", () => store.append(refs(m))),
    );
    // A hold goes in before its mapping's release (same batch where there is one): a restart in
    // between keeps the pages booked twice with one attribute, never not at all.
    broker.on("mapping.hold", (h) =>
      may("a revoked mapping's hold", () => store.append({ t: "hold", h: holdRec(h) })),
    );
    broker.on("mapping.unhold", (h) => may("a hold's end", () => store.append({ t: "hold.end", id: h.id })));
    broker.on("mapping.release", (m) =>
      may("a release", () =>
        store.append({ t: "map.release", df: String(m.deviceFile.id), cookie: String(m.cookie) }),
      ),
    );
    // Delivery is recorded before the fd is sent: a restart then keeps the pages booked.
    broker.on("fd.delivery", (result, m) => {
      if (result === "ok" && m)
        may("a delivery", () =>
          store.append({
            t: "map.deliver",
            df: String(m.deviceFile.id),
            cookie: String(m.cookie),
            ...(m.ticket ? { ticket: m.ticket } : {}),
          }),
        );
    });
    broker.on("device.health", (device, health) =>
      may("a device health change", () => store.append({ t: "health", device, health })),
    );
  }

  freeze(): void {
    this.frozen = true;
  }

  get stats() {
    return { ...this.store.stats, failures: this.failures };
  }
}
