// Tenants: the set of uids that belong to one user, for sharing brokerd's global caps fairly
// (grants/fair-share.ts). A uid inside a subordinate uid range of /etc/subuid (subuid(5), written
// by the operator: useradd, usermod --add-subuids) belongs to the tenant of the range's owner;
// every other uid is a tenant of its own. Pure: parses the texts of /etc/subuid and /etc/passwd
// (identity/tenants-file.ts reads them) and answers tenantOf(uid). Never trusts anything a client
// says or can write: only these two operator files and the kernel's uid.
//
// Bounded: at most MAX_RANGES ranges are kept; lines that are not `owner:start:count` with
// integers in range, ranges holding uid 0, and ranges overlapping one that starts below them are
// skipped, each with a warning (at most MAX_WARNINGS of them are kept, then a count).

/** Ranges kept from one file; more are skipped with a warning. */
export const MAX_RANGES = 65_536;
const MAX_WARNINGS = 8;
const MAX_UID = 2 ** 32 - 2;

export interface Tenant {
  /** The FairShare key: "uid:N" for a user whose uid is known, "user:NAME" for an owner name /etc/passwd lacks. */
  key: string;
  /** How messages name the owner: "alice", "uid 1000". */
  owner: string;
  /** The identity's uid came in through a subordinate range of owner (not owner's own uid). */
  viaRange: boolean;
}

export interface SubuidRange {
  start: number;
  count: number;
  tenant: Tenant;
}

/** uidTenant's answers, shared (every session of a uid held its own copy); forgotten when full. */
const byUid = new Map<number, Readonly<Tenant>>();
const MAX_REMEMBERED_UIDS = 4096;

/** The tenant of a uid no range holds: the uid itself (one shared object per uid; never change it). */
export function uidTenant(uid: number): Tenant {
  let t = byUid.get(uid);
  if (!t) {
    if (byUid.size >= MAX_REMEMBERED_UIDS) byUid.clear();
    t = Object.freeze({ key: `uid:${uid}`, owner: `uid ${uid}`, viaRange: false });
    byUid.set(uid, t);
  }
  return t;
}

/** "tenant of uid 60000 (subuid range of alice)", "tenant of uid 4242": how refusals name it. */
export function describeTenant(uid: number, t: Tenant): string {
  return t.viaRange ? `tenant of uid ${uid} (subuid range of ${t.owner})` : `tenant of uid ${uid}`;
}

/** name -> uid from /etc/passwd text (first entry wins; malformed lines skipped). */
export function parsePasswd(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 4 || f[0] === "" || out.has(f[0]!) || !/^\d{1,10}$/.test(f[2]!)) continue;
    const uid = Number(f[2]);
    if (uid <= MAX_UID) out.set(f[0]!, uid);
  }
  return out;
}

export class TenantMap {
  /** Sorted by start, never overlapping. */
  private readonly ranges: SubuidRange[];

  constructor(ranges: readonly SubuidRange[] = []) {
    this.ranges = [...ranges].sort((a, b) => a.start - b.start);
  }

  get size(): number {
    return this.ranges.length;
  }

  tenantOf(uid: number): Tenant {
    let lo = 0;
    let hi = this.ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.ranges[mid]!;
      if (uid < r.start) hi = mid - 1;
      else if (uid >= r.start + r.count) lo = mid + 1;
      else return r.tenant;
    }
    return uidTenant(uid);
  }
}

/**
 * The ranges of /etc/subuid text, owners resolved through `users` (parsePasswd). An owner may be
 * a login name or a numeric uid (subuid(5)); a name /etc/passwd does not know stays a tenant of
 * its own by name ("user:NAME").
 */
export function parseSubuid(
  text: string,
  users: ReadonlyMap<string, number>,
): { map: TenantMap; warnings: string[] } {
  const found: (SubuidRange & { line: number })[] = [];
  const warnings: string[] = [];
  let skipped = 0;
  const warn = (w: string) => {
    if (warnings.length < MAX_WARNINGS) warnings.push(w);
    else skipped++;
  };
  const names = new Map<number, string>();
  for (const [name, uid] of users) if (!names.has(uid)) names.set(uid, name);
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (found.length >= MAX_RANGES) {
      warn(`line ${i + 1}: more than ${MAX_RANGES} ranges; the rest are ignored`);
      break;
    }
    const m = /^([^:\s]{1,256}):(\d{1,10}):(\d{1,10})$/.exec(line);
    const start = Number(m?.[2]);
    const count = Number(m?.[3]);
    if (!m || count < 1 || start + count - 1 > MAX_UID) {
      warn(`line ${i + 1}: not "owner:start:count" with uids up to ${MAX_UID}; ignored`);
      continue;
    }
    if (start === 0) {
      warn(`line ${i + 1}: a range holding uid 0 (root) is ignored`);
      continue;
    }
    const owner = m[1]!;
    const numeric = /^\d+$/.test(owner);
    const uid = numeric ? Number(owner) : users.get(owner);
    const name = numeric ? (names.get(uid!) ?? `uid ${owner}`) : owner;
    const tenant: Tenant =
      uid === undefined || uid > MAX_UID
        ? { key: `user:${owner}`, owner: name, viaRange: true }
        : { key: `uid:${uid}`, owner: name, viaRange: true };
    found.push({ start, count, tenant, line: i + 1 });
  }
  // A range overlapping one that starts below it (or at the same uid on an earlier line) is
  // skipped: which user a uid belongs to must not depend on a lookup's order.
  found.sort((a, b) => a.start - b.start || a.line - b.line);
  const kept: SubuidRange[] = [];
  for (const r of found) {
    const prev = kept[kept.length - 1];
    if (prev && r.start < prev.start + prev.count) {
      warn(`line ${r.line}: overlaps the range of ${prev.tenant.owner} at ${prev.start}; ignored`);
      continue;
    }
    kept.push({ start: r.start, count: r.count, tenant: r.tenant });
  }
  if (skipped > 0) warnings.push(`${skipped} more lines ignored`);
  return { map: new TenantMap(kept), warnings };
}
