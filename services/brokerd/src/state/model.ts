// StateModel: the durable view of every grant, rebuilt by replaying records (records.ts) over a
// snapshot. It is what a restarted brokerd knows: sessions (with the process they belong to),
// their device files, the mappings in them, device health, bound Kubernetes claims, and the id counters that keep ids
// unique across runs. Pure: no I/O. The Broker's in-memory maps are rebuilt from it (restore.ts).

import type { ClaimRec } from "../claims/book.js";
import type { DeviceHealth } from "../devices/backend.js";
import type { DeviceFileRec, HoldRec, MappingRec, SessionRec, StateRecord } from "./records.js";

export class ModelError extends Error {}

export interface Snapshot {
  version: 1;
  run: number;
  bootId: string;
  nextDeviceFileId: string;
  sessions: SessionRec[];
  deviceFiles: DeviceFileRec[];
  mappings: MappingRec[];
  health: { device: string; health: DeviceHealth }[];
  /** Revoked mappings still held (absent in snapshots written before holds: none). */
  holds?: HoldRec[];
  /** Bound Kubernetes claims (absent in snapshots written before claims: none). */
  claims?: ClaimRec[];
}

export class StateModel {
  readonly sessions = new Map<string, SessionRec>();
  readonly deviceFiles = new Map<string, DeviceFileRec>();
  /**
   * Mappings by device file, then cookie (closing a device file touches only its own); a device file
   * is here from its first mapping (an open one with none holds no empty Map).
   */
  readonly mappings = new Map<string, Map<string, MappingRec>>();
  mappingCount = 0;
  readonly health = new Map<string, DeviceHealth>();
  /** Revoked mappings whose holder may still map them; independent of sessions and device files. */
  readonly holds = new Map<string, HoldRec>();
  /** Bound Kubernetes claims by claim UID. */
  readonly claims = new Map<string, ClaimRec>();
  run = 0;
  bootId = "";
  /** Device-file ids are never reused, across runs too (journal rows of two runs never collide). */
  nextDeviceFileId = 1n;
  /** Records applied since the snapshot (compaction decides by it). */
  applied = 0;

  /** Applies one record. A record naming something that was never created is damage: throws. */
  apply(r: StateRecord): void {
    this.applied++;
    switch (r.t) {
      case "run":
        this.run = r.run;
        this.bootId = r.bootId;
        return;
      case "session.open":
        if (this.sessions.has(r.s.id)) throw new ModelError(`session ${r.s.id} opened twice`);
        this.sessions.set(r.s.id, r.s);
        return;
      case "session.name": {
        const s = this.sessions.get(r.id);
        if (s) s.clientName = r.clientName;
        return;
      }
      case "session.end":
        // Ending releases what the session held (brokerd writes the releases first; this is the net).
        for (const d of this.deviceFilesOf(r.id)) this.closeDeviceFile(d.id);
        this.sessions.delete(r.id);
        this.bySession.delete(r.id);
        return;
      case "df.open": {
        if (!this.sessions.has(r.d.session))
          throw new ModelError(`device file ${r.d.id} opened in unknown session ${r.d.session}`);
        if (this.deviceFiles.has(r.d.id)) throw new ModelError(`device file ${r.d.id} opened twice`);
        this.deviceFiles.set(r.d.id, r.d);
        const mine = this.bySession.get(r.d.session);
        // One device file per session is the usual: its id alone, a Set from the second.
        if (mine === undefined) this.bySession.set(r.d.session, r.d.id);
        else if (typeof mine === "string") this.bySession.set(r.d.session, new Set([mine, r.d.id]));
        else mine.add(r.d.id);
        const id = BigInt(r.d.id);
        if (id >= this.nextDeviceFileId) this.nextDeviceFileId = id + 1n;
        return;
      }
      case "df.close":
        this.closeDeviceFile(r.id);
        return;
      case "map.create": {
        if (!this.deviceFiles.has(r.m.df))
          throw new ModelError(`mapping ${r.m.cookie} created in unknown device file ${r.m.df}`);
        let ms = this.mappings.get(r.m.df);
        if (!ms) {
          ms = new Map();
          this.mappings.set(r.m.df, ms);
        }
        if (ms.has(r.m.cookie)) throw new ModelError(`mapping ${r.m.df}/${r.m.cookie} created twice`);
        ms.set(r.m.cookie, r.m);
        this.mappingCount++;
        return;
      }
      case "map.update": {
        const m = this.mapping(r.df, r.cookie, "update");
        Object.assign(m, {
          requested: r.requested,
          effective: r.effective,
          fallbackReason: r.fallbackReason,
          kind: r.kind,
          rule: r.rule,
        });
        return;
      }
      case "map.deliver": {
        const m = this.mapping(r.df, r.cookie, "delivery");
        m.state = "delivered";
        m.ticket = r.ticket ?? "";
        return;
      }
      case "map.refs": {
        const m = this.mapping(r.df, r.cookie, "reference count");
        m.refs = r.refs;
        m.ticket = r.ticket;
        m.expiresAt = r.expiresAt;
        return;
      }
      case "map.release":
        if (this.mappings.get(r.df)?.delete(r.cookie)) this.mappingCount--;
        return;
      case "hold":
        // A second record of one hold changes its enforcement.
        this.holds.set(r.h.id, r.h);
        return;
      case "hold.end":
        this.holds.delete(r.id);
        return;
      case "health":
        if (r.health === "healthy" || r.health === "gone") this.health.delete(r.device);
        else this.health.set(r.device, r.health);
        return;
      case "claim.bind":
        this.claims.set(r.c.uid, r.c);
        return;
      case "claim.unbind":
        this.claims.delete(r.uid);
        return;
    }
  }

  /** Device-file ids by session: one id, or a Set of them. */
  private readonly bySession = new Map<string, string | Set<string>>();

  private mapping(df: string, cookie: string, what: string): MappingRec {
    const m = this.mappings.get(df)?.get(cookie);
    if (!m) throw new ModelError(`${what} of unknown mapping ${df}/${cookie}`);
    return m;
  }

  private closeDeviceFile(id: string): void {
    const d = this.deviceFiles.get(id);
    if (!d) return;
    this.mappingCount -= this.mappings.get(id)?.size ?? 0;
    this.mappings.delete(id);
    this.deviceFiles.delete(id);
    const mine = this.bySession.get(d.session);
    if (mine === id) this.bySession.delete(d.session);
    else if (typeof mine === "object") mine.delete(id);
  }

  deviceFilesOf(session: string): DeviceFileRec[] {
    const mine = this.bySession.get(session);
    const ids = mine === undefined ? [] : typeof mine === "string" ? [mine] : [...mine];
    return ids.map((id) => this.deviceFiles.get(id)!);
  }

  mappingsOf(df: string): MappingRec[] {
    return [...(this.mappings.get(df)?.values() ?? [])];
  }

  /** Live records a snapshot must hold (compaction compares the log's length with it). */
  get liveCount(): number {
    return (
      this.sessions.size +
      this.deviceFiles.size +
      this.mappingCount +
      this.health.size +
      this.holds.size +
      this.claims.size
    );
  }

  snapshot(): Snapshot {
    return {
      version: 1,
      run: this.run,
      bootId: this.bootId,
      nextDeviceFileId: String(this.nextDeviceFileId),
      sessions: [...this.sessions.values()],
      deviceFiles: [...this.deviceFiles.values()],
      mappings: [...this.mappings.values()].flatMap((ms) => [...ms.values()]),
      health: [...this.health].map(([device, health]) => ({ device, health })),
      holds: [...this.holds.values()],
      claims: [...this.claims.values()],
    };
  }

  static fromSnapshot(s: Snapshot): StateModel {
    if (s.version !== 1) throw new ModelError(`snapshot version ${String(s.version)} is not 1`);
    const m = new StateModel();
    m.run = s.run;
    m.bootId = s.bootId;
    m.nextDeviceFileId = BigInt(s.nextDeviceFileId);
    for (const x of s.sessions) m.apply({ t: "session.open", s: x });
    for (const x of s.deviceFiles) m.apply({ t: "df.open", d: x });
    for (const x of s.mappings) m.apply({ t: "map.create", m: x });
    for (const x of s.health) m.apply({ t: "health", device: x.device, health: x.health });
    for (const x of s.holds ?? []) m.apply({ t: "hold", h: x });
    for (const x of s.claims ?? []) m.apply({ t: "claim.bind", c: x });
    m.applied = 0;
    return m;
  }
}
