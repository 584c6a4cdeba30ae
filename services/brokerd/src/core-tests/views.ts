// Test support for the in-process core tests: normalized views of what the core holds (sessions,
// device files, mappings, holds, quotas, page bookings), the same view of a StateModel replayed
// from the store's files, and the invariants the model-based test checks after every step. Test
// code only: never imported by brokerd. It reads the core through its public fields and the
// AttributeMap's own check (the one place that looks below the facade: attributeMap()).
import type { Broker } from "../broker.js";
import type { Attribute } from "../devices/backend.js";
import type { Hold } from "../grants/holds.js";
import type { Usage } from "../grants/quota.js";
import type { StateModel } from "../state/model.js";
import { DEVICES, PAGE } from "./support.js";

export interface MappingView {
  df: string;
  cookie: string;
  region: number;
  offset: string;
  length: string;
  requested: Attribute;
  effective: Attribute;
  prot: string;
  state: string;
  refs: number;
  rule: string;
  ticket: string;
}

export interface HoldView {
  id: string;
  pid: number;
  session: string;
  df: string;
  cookie: string;
  device: string;
  region: number;
  offset: string;
  length: string;
  attribute: Attribute;
  refs: number;
  reason: string;
  quotaKeys: string[];
}

/** What the store records: the part of the core a replay of its files must give back. */
export interface GrantView {
  sessions: { id: string; uid: number; pid: number; startTime: string; tokenHash: string }[];
  deviceFiles: { id: string; session: string; device: string; layout: string }[];
  mappings: MappingView[];
  holds: HoldView[];
  health: [string, string][];
}

const byKey = <T>(xs: T[], key: (x: T) => string) =>
  xs.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));

function holdView(h: Hold): HoldView {
  return {
    id: h.id,
    pid: h.pid,
    session: h.sessionId,
    df: String(h.deviceFileId),
    cookie: String(h.cookie),
    device: h.deviceId,
    region: h.regionIndex,
    offset: String(h.offset),
    length: String(h.length),
    attribute: h.attribute,
    refs: h.refs,
    reason: h.reason,
    quotaKeys: [...h.quotaKeys],
  };
}

/** The live core's grants, normalized (sorted, bigints as strings). */
export function liveView(b: Broker): GrantView {
  const v: GrantView = { sessions: [], deviceFiles: [], mappings: [], holds: [], health: [] };
  for (const s of b.sessions.values()) {
    const id = s.identity;
    v.sessions.push({ id: s.id, uid: id.uid, pid: id.pid, startTime: id.startTime, tokenHash: s.tokenHash });
    for (const df of s.deviceFiles.values()) {
      v.deviceFiles.push({ id: String(df.id), session: s.id, device: df.device.id, layout: df.layout });
      for (const m of df.mappings.values())
        v.mappings.push({
          df: String(df.id),
          cookie: String(m.cookie),
          region: m.region.index,
          offset: String(m.regionOffset),
          length: String(m.length),
          requested: m.requestedAttribute,
          effective: m.effectiveAttribute,
          prot: m.prot,
          state: m.state,
          refs: m.refs,
          rule: m.rule,
          ticket: m.ticket,
        });
    }
  }
  for (const h of b.holds.all()) v.holds.push(holdView(h));
  for (const d of DEVICES) if (b.healthOf(d.id) !== "healthy") v.health.push([d.id, b.healthOf(d.id)]);
  return sortView(v);
}

/** The same view of a StateModel (a replay of the store's files). */
export function modelView(m: StateModel): GrantView {
  const v: GrantView = { sessions: [], deviceFiles: [], mappings: [], holds: [], health: [] };
  for (const s of m.sessions.values())
    v.sessions.push({ id: s.id, uid: s.uid, pid: s.pid, startTime: s.startTime, tokenHash: s.tokenHash });
  for (const d of m.deviceFiles.values())
    v.deviceFiles.push({ id: d.id, session: d.session, device: d.device, layout: d.layout });
  for (const ms of m.mappings.values())
    for (const r of ms.values())
      v.mappings.push({
        df: r.df,
        cookie: r.cookie,
        region: r.region,
        offset: r.offset,
        length: r.length,
        requested: r.requested,
        effective: r.effective,
        prot: r.prot,
        state: r.state,
        refs: r.refs ?? 1,
        rule: r.rule,
        ticket: r.ticket,
      });
  for (const h of m.holds.values())
    v.holds.push({
      id: h.id,
      pid: h.pid,
      session: h.session,
      df: h.df,
      cookie: h.cookie,
      device: h.device,
      region: h.region,
      offset: h.offset,
      length: h.length,
      attribute: h.attribute,
      refs: h.refs,
      reason: h.reason,
      quotaKeys: [...h.quotaKeys],
    });
  for (const [d, h] of m.health) if (h !== "healthy") v.health.push([d, h]);
  return sortView(v);
}

function sortView(v: GrantView): GrantView {
  byKey(v.sessions, (s) => s.id);
  byKey(v.deviceFiles, (d) => d.id.padStart(20, "0"));
  byKey(v.mappings, (m) => `${m.df.padStart(20, "0")}/${m.cookie.padStart(20, "0")}`);
  byKey(v.holds, (h) => h.id);
  byKey(v.health, (h) => h[0]);
  return v;
}

/** Quota usage per key, without the session slots (a restored session holds none until resumed). */
export type QuotaView = Record<string, Omit<Usage, "sessions" | "bytes"> & { bytes: string }>;

export function quotaView(b: Broker, keys: Iterable<string>): QuotaView {
  const out: QuotaView = {};
  for (const k of [...keys].sort()) {
    const { sessions: _s, bytes, ...rest } = b.quotas.usage(k);
    out[k] = { ...rest, bytes: String(bytes) };
  }
  return out;
}

/** Every quota key the live objects (sessions, holds) are charged to. */
export function quotaKeysOf(b: Broker): Set<string> {
  const keys = new Set<string>();
  for (const s of b.sessions.values()) for (const k of s.quotaKeys) keys.add(k);
  for (const h of b.holds.all()) for (const k of h.quotaKeys) keys.add(k);
  return keys;
}

/** What the live objects account for, per key: the usage the QuotaBook must show. */
export function expectedQuotas(b: Broker, keys: Iterable<string>): Record<string, Usage> {
  const out: Record<string, Usage> = {};
  const zero = (): Usage => ({
    sessions: 0,
    fdConnections: 0,
    pendingMappings: 0,
    deviceFiles: 0,
    mappings: 0,
    unreadFds: 0,
    bytes: 0n,
  });
  for (const k of keys) out[k] = zero();
  const of = (k: string): Usage => {
    out[k] ??= zero();
    return out[k];
  };
  for (const s of b.sessions.values())
    for (const k of s.quotaKeys) {
      const u = of(k);
      if (s.slotHeld) u.sessions++;
      u.deviceFiles += s.deviceFiles.size;
      for (const df of s.deviceFiles.values())
        for (const m of df.mappings.values()) {
          u.mappings += m.refs;
          u.bytes += m.length;
          if (m.state === "pending") u.pendingMappings++;
        }
    }
  for (const h of b.holds.all())
    for (const k of h.quotaKeys) {
      const u = of(k);
      u.mappings += h.refs;
      u.bytes += h.length;
    }
  return out;
}

/** Page -> attribute, per device and region, as the live mappings and holds book them. */
export type Bookings = Map<string, Attribute>;

const pageKey = (device: string, region: number, page: bigint) => `${device}/${region}/${page}`;

/**
 * The pages the live mappings and holds cover, each with its attribute; throws naming both
 * when one page is covered with two attributes.
 */
export function expectedBookings(b: Broker): Bookings {
  const out: Bookings = new Map();
  const book = (
    device: string,
    region: number,
    offset: bigint,
    length: bigint,
    a: Attribute,
    who: string,
  ) => {
    for (let p = offset / PAGE; p <= (offset + length - 1n) / PAGE; p++) {
      const k = pageKey(device, region, p);
      const had = out.get(k);
      if (had !== undefined && had !== a) throw new Error(`page ${k} is booked ${had} and ${a} (${who})`);
      out.set(k, a);
    }
  };
  for (const s of b.sessions.values())
    for (const df of s.deviceFiles.values())
      for (const m of df.mappings.values())
        book(
          df.device.id,
          m.region.index,
          m.regionOffset,
          m.length,
          m.effectiveAttribute,
          `mapping ${df.id}/${m.cookie}`,
        );
  for (const h of b.holds.all())
    book(h.deviceId, h.regionIndex, h.offset, h.length, h.attribute, `hold ${h.id}`);
  return out;
}

/** What the core's AttributeMaps say of every page of every device (probed with their own check). */
export function bookedPages(b: Broker): Bookings {
  const out: Bookings = new Map();
  const attrs: Attribute[] = ["UC", "WC", "WB"];
  for (const d of DEVICES) {
    const am = b.attributeMap(d.id);
    for (const r of d.regions)
      for (let p = 0n; p < BigInt(r.size) / PAGE; p++) {
        const fits = attrs.filter((a) => {
          try {
            am.check(r.index, `BAR${r.index}`, p * PAGE, PAGE, a);
            return true;
          } catch {
            return false;
          }
        });
        if (fits.length === attrs.length) continue;
        if (fits.length !== 1)
          throw new Error(`page ${pageKey(d.id, r.index, p)} fits ${fits.join(",") || "none"}`);
        out.set(pageKey(d.id, r.index, p), fits[0]!);
      }
  }
  return out;
}

/** No live mapping shares its cookie with a hold of the same device file (or another hold). */
export function cookieClashes(b: Broker): string[] {
  const out: string[] = [];
  const held = new Map<string, string>();
  for (const h of b.holds.all()) {
    const k = `${h.deviceFileId}/${h.cookie}`;
    if (held.has(k)) out.push(`cookie ${k} is held twice (holds ${held.get(k)} and ${h.id})`);
    held.set(k, h.id);
  }
  for (const s of b.sessions.values())
    for (const df of s.deviceFiles.values())
      for (const m of df.mappings.values()) {
        const k = `${df.id}/${m.cookie}`;
        if (held.has(k))
          out.push(`cookie ${k} was handed out to a new mapping while hold ${held.get(k)} holds it`);
      }
  return out;
}
