// Policy schema: the types of a parsed Policy and the validation of the version-1 policy file
// (YAML or JSON). Owns every rule about what a policy file may say and every load-time error
// message. Pure: never reads files (load.ts does) and never decides a request (evaluate.ts does).
// Never accepts a file it does not fully understand: unknown keys, wrong types and empty matchers
// are errors, because a typo must not silently widen or narrow what the broker allows.
/*
 * Policy file format, version 1 (YAML; JSON with the same structure is accepted too)
 * -------------------------------------------------------------------------------
 *
 *   version: 1                       # required; the only version this broker reads
 *   defaults:                        # optional
 *     limits: { deviceFiles: 64, mappings: 1024, bytes: 1GiB }   # for rules that omit a limit
 *   rules:                           # required list; evaluated in file order, first match wins;
 *                                    # anything no rule allows is denied
 *     - name: sim-any-local          # required, unique; used in audit logs and metric labels
 *                                    # (letters, digits, "-", "_", "."; at most 64 characters)
 *       match:                       # required; all given matchers must match. A rule that would
 *                                    # match nobody (absent or empty match, empty list) is an error:
 *         any: true                  # optional; matches every identity (not combinable with the rest)
 *         uids: [0, 1000, 65534]     # optional list of numeric uids (0..4294967294)
 *         gids: [100]                # optional list of numeric gids (primary gid from SO_PEERCRED)
 *         cgroups: ["/system.slice/docker-*.scope", "/kubepods.slice/**"]
 *                                    # optional globs over the cgroup v2 path, starting with "/" or
 *                                    # "**"; * = within one path segment, ** = across segments. An
 *                                    # identity whose cgroup is unknown ("") matches no cgroup glob.
 *                                    # Anchor them at a root-made prefix: a user names whatever
 *                                    # lies below its own delegated cgroup, so a glob starting
 *                                    # with "**" matches cgroups a user made.
 *         containers: ["4f3c2b1a...", "4f3c*"]   # optional container ids (64 lowercase hex, as
 *                                    # `docker inspect`/`crictl ps --no-trunc` print them) or globs
 *                                    # over them ("4f3c*" for a short id). The id is read from the
 *                                    # cgroup path (identity/container.ts), only when no
 *                                    # unprivileged user could have named it (cgroup-trust.ts); a
 *                                    # process in no such container matches no containers entry.
 *         pods: ["0c4f2a9e-1111-2222-3333-444455556666"]   # optional Kubernetes pod UIDs
 *                                    # (metadata.uid, with dashes), read from the cgroup's kubepods
 *                                    # path, on the same condition; a process in no pod matches no
 *                                    # pods entry.
 *       devices: ["sim*"]            # required; globs over device ids ("sim0", "0000:00:01.0"); BDFs
 *                                    # need their domain and lowercase hex, as in sysfs
 *       regions: [BAR0, BAR2, CONFIG]   # required; BAR0..BAR5, ROM, CONFIG, VGA, or "*" for all
 *       attributes: [UC, WC]         # required; subset of UC, WC, WB (WB only meaningful on
 *                                    # simulated memory)
 *       prot: [r, rw]                # required; subset of r, rw (a request must name a listed prot)
 *       readWrite: true              # optional (default false): allows ReadRegion/WriteRegion
 *                                    # through the broker (writes also need rw in prot)
 *       allowDeviceFd: false         # optional (default false): may the Backing be the whole VFIO
 *                                    # device fd
 *       revoke:                      # optional: what a revocation of this rule's mappings does.
 *         enforce: kill              #   "none" (default): the holder is asked to unmap and its
 *                                    #   pages stay booked until it releases them or exits; "kill":
 *                                    #   after graceMs brokerd SIGKILLs a holder that still holds
 *                                    #   them (through its pidfd). Never for a holder that only
 *                                    #   closed its own connection.
 *         graceMs: 5000              #   0..3600000 (default 5000)
 *       limits:                      # optional; each omitted limit comes from defaults.limits,
 *                                    # else the built-in default. Every limit is a quota per
 *                                    # identity: it counts across ALL sessions of the uid (and of
 *                                    # the container, when the process is in one), so opening more
 *                                    # connections never buys more. The built-in defaults are at
 *                                    # most 1/16 of brokerd's global caps; the caps
 *                                    # themselves are shared fairly by users (tenants:
 *                                    # grants/fair-share.ts), so a quota is an upper bound.
 *         sessions: 64               #   else 64: connected sessions (broker.sock connections)
 *         fdConnections: 64          #   else 64: open fd-channel (fd.sock) connections
 *         pendingMappings: 64        #   else 64: mappings created whose fd was not fetched yet
 *         deviceFiles: 64            #   else 64: open DeviceFiles
 *         mappings: 1024             #   else 1024: live Mappings
 *         bytes: 1GiB                #   else 1GiB: bytes mapped; an integer or a string with
 *                                    #   suffix B, KiB, MiB, GiB or TiB
 *         unreadFds: 256             #   else 256: fds in fd-channel replies the identity has not
 *                                    #   read yet (in flight in the kernel); at the limit brokerd
 *                                    #   reads no more requests from its fd-channel connections
 *   The connection limits (sessions, fdConnections) come from the first rule that matches the
 *   identity at all; an identity no rule names gets 4 of each (so it can hear PERMISSION_DENIED)
 *   and nothing else. The other limits come from the rule that allows the request.
 *
 * Every error names file:line:col, the path of the offending value and what to change, e.g.
 *   policy.yaml:12:7: rules[0].attributes[1]: "XC" is not an attribute; use UC or WC (WB only on simulated memory)
 */

import { createHash } from "node:crypto";
import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type YAMLMap,
  type Document as YamlDocument,
  type Node as YamlNode,
} from "yaml";

export type Attribute = "UC" | "WC" | "WB";
export type Prot = "r" | "rw";
export const ATTRIBUTES: readonly Attribute[] = ["UC", "WC", "WB"];
export const PROTS: readonly Prot[] = ["r", "rw"];
export const REGION_NAMES = ["BAR0", "BAR1", "BAR2", "BAR3", "BAR4", "BAR5", "ROM", "CONFIG", "VGA"] as const;
export type RegionName = (typeof REGION_NAMES)[number];

/** The kernel-verified identity of a Session (SO_PEERCRED + /proc/<pid>/cgroup). */
export interface Identity {
  uid: number;
  gid: number;
  pid: number;
  /** cgroup v2 path like "/user.slice/user-1000.slice/session-1.scope"; "" if unknown. */
  cgroup: string;
  /**
   * The path may name a container or pod: no unprivileged user could have created or named it
   * (identity/cgroup-trust.ts). When false, containers: and pods: match nothing and the identity
   * has no container quota key; cgroups: globs still match the path as the kernel reports it.
   */
  cgroupTrusted: boolean;
}

/** Quotas per identity (uid, and container when known), across all of its sessions. */
export interface Limits {
  /** connected sessions */
  sessions: number;
  /** open fd-channel connections */
  fdConnections: number;
  /** mappings whose fd has not been fetched yet (each holds a backing fd in brokerd) */
  pendingMappings: number;
  /** open DeviceFiles */
  deviceFiles: number;
  /** live Mappings */
  mappings: number;
  /** bytes mapped */
  bytes: bigint;
  /** fds in fd-channel replies not read yet (held in flight by the kernel) */
  unreadFds: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  sessions: 64,
  fdConnections: 64,
  pendingMappings: 64,
  deviceFiles: 64,
  mappings: 1024,
  bytes: 1n << 30n,
  unreadFds: 256,
});
/** An identity no rule names: enough connections to be told PERMISSION_DENIED, nothing else. */
export const UNNAMED_LIMITS: Readonly<Limits> = Object.freeze({
  sessions: 4,
  fdConnections: 4,
  pendingMappings: 0,
  deviceFiles: 0,
  mappings: 0,
  bytes: 0n,
  unreadFds: 32,
});

/** Who a rule applies to. Absent lists are "not given"; all given matchers must match. */
export interface IdentityMatch {
  any: boolean;
  uids?: number[];
  gids?: number[];
  /** globs over the cgroup v2 path, matched with segments (`*` stays within one segment) */
  cgroups?: string[];
  /** container ids (64 hex) or globs over them, read from the cgroup path */
  containers?: string[];
  /** Kubernetes pod UIDs (with dashes), read from the cgroup path */
  pods?: string[];
}

export interface Rule {
  name: string;
  /** 1-based line of the rule in its source, for audit logs ("rule x at policy.yaml:12") */
  line: number;
  match: IdentityMatch;
  /** globs over device ids */
  devices: string[];
  /** region names, or "*" for every region */
  regions: (RegionName | "*")[];
  attributes: Attribute[];
  prot: Prot[];
  readWrite: boolean;
  allowDeviceFd: boolean;
  /** What a revocation of this rule's mappings does to a holder that does not unmap them. */
  revoke: RevokeEnforcement;
  limits: Limits;
}

export interface RevokeEnforcement {
  enforce: "none" | "kill";
  graceMs: number;
}

export const DEFAULT_REVOKE: Readonly<RevokeEnforcement> = Object.freeze({ enforce: "none", graceMs: 5000 });
const MAX_GRACE_MS = 3_600_000;

export interface Policy {
  version: 1;
  /** in file order; the first rule that matches a request decides it */
  rules: Rule[];
  /** the file path, or "<inline>" */
  source: string;
  /** sha256 hex of the policy text */
  digest: string;
}

/** A policy that failed validation. The caller keeps the policy it had. */
export class PolicyError extends Error {
  readonly errors: string[];
  constructor(errors: string[], source = "<inline>") {
    const n = errors.length;
    super(`invalid policy ${source}: ${n} error${n === 1 ? "" : "s"}\n  ${errors.join("\n  ")}`);
    this.name = "PolicyError";
    this.errors = errors;
  }
}

// ---------------------------------------------------------------------------------------------
// Validation

const TOP_KEYS = ["version", "defaults", "rules"] as const;
const DEFAULTS_KEYS = ["limits"] as const;
const RULE_KEYS = [
  "name",
  "match",
  "devices",
  "regions",
  "attributes",
  "prot",
  "readWrite",
  "allowDeviceFd",
  "revoke",
  "limits",
] as const;
const MATCH_KEYS = ["any", "uids", "gids", "cgroups", "containers", "pods"] as const;
const LIMIT_KEYS = [
  "sessions",
  "fdConnections",
  "pendingMappings",
  "deviceFiles",
  "mappings",
  "bytes",
  "unreadFds",
] as const;
const COUNT_KEYS = [
  "sessions",
  "fdConnections",
  "pendingMappings",
  "deviceFiles",
  "mappings",
  "unreadFds",
] as const;

const MAX_ID = 4294967294; // (uid_t)-1 means "no id"
const MAX_COUNT = 2147483647;
const MAX_BYTES = (1n << 63n) - 1n;
const SIZE_SHIFT: Record<string, bigint> = { "": 0n, B: 0n, KiB: 10n, MiB: 20n, GiB: 30n, TiB: 40n };
const RULE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const DEVICE_GLOB = /^[A-Za-z0-9_.:*-]{1,128}$/;
const BDF_NO_DOMAIN = /^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/;
const BDF_UPPER = /^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/;

interface Field {
  /** the value node, alias resolved; null when the key has no value */
  value: YamlNode | null;
  /** where an error about this field points: the value, or the key when there is no value */
  offset: number;
}

/** Collects positioned errors; formats them as `source:line:col: path: message`. */
class Checker {
  private readonly found: { offset: number; seq: number; text: string }[] = [];
  constructor(
    readonly source: string,
    readonly doc: YamlDocument,
    readonly lines: LineCounter,
  ) {}

  get count(): number {
    return this.found.length;
  }

  error(offset: number, path: string, message: string): void {
    const { line, col } = this.lines.linePos(offset);
    const text = `${this.source}:${Math.max(line, 1)}:${Math.max(col, 1)}: ${path || "top level"}: ${message}`;
    this.found.push({ offset, seq: this.found.length, text });
  }

  line(offset: number): number {
    return Math.max(this.lines.linePos(offset).line, 1);
  }

  sorted(): string[] {
    return [...this.found].sort((a, b) => a.offset - b.offset || a.seq - b.seq).map((e) => e.text);
  }

  /** Follows an alias (`*name`) to the node it names. */
  deref(node: unknown): YamlNode | null {
    if (isAlias(node)) return node.resolve(this.doc) ?? null;
    return isMap(node) || isSeq(node) || isScalar(node) ? node : null;
  }
}

function start(node: YamlNode | null, fallback: number): number {
  return node?.range?.[0] ?? fallback;
}

function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

function isNullScalar(node: YamlNode | null): boolean {
  return node === null || (isScalar(node) && node.value === null);
}

/** A short rendering of a YAML value for messages: strings quoted, numbers and booleans as written. */
function show(node: YamlNode | null): string {
  if (node === null) return "nothing";
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return "nothing";
    if (typeof v === "string") return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}...` : v);
    return String(v);
  }
  return isMap(node) ? "a map" : "a list";
}

function closest(word: string, options: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const option of options) {
    const d = editDistance(word.toLowerCase(), option.toLowerCase());
    if (d < bestDistance) {
      best = option;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  if (a.length > 64 || b.length > 64) return Math.abs(a.length - b.length) + 64;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * Reads a map with a closed set of keys. Unknown and repeated keys are errors; returns undefined
 * (after reporting) when the node is not a map.
 */
function readMap(
  ck: Checker,
  node: YamlNode | null,
  offset: number,
  path: string,
  keys: readonly string[],
  example: string,
): Map<string, Field> | undefined {
  if (!isMap(node)) {
    ck.error(start(node, offset), path, `must be a map like ${example}, not ${show(node)}`);
    return undefined;
  }
  const fields = new Map<string, Field>();
  for (const pair of (node as YAMLMap<unknown, unknown>).items) {
    const key = ck.deref(pair.key);
    const keyOffset = start(key, start(node, offset));
    if (!isScalar(key) || (typeof key.value !== "string" && typeof key.value !== "number")) {
      ck.error(keyOffset, path, `keys must be plain names; expected one of ${keys.join(", ")}`);
      continue;
    }
    const name = String(key.value);
    if (!keys.includes(name)) {
      const hint = closest(name, keys);
      ck.error(
        keyOffset,
        path,
        `unknown key ${JSON.stringify(name)}; ${hint ? `did you mean "${hint}"? ` : ""}allowed keys: ${keys.join(", ")}`,
      );
      continue;
    }
    if (fields.has(name)) {
      ck.error(keyOffset, join(path, name), `appears twice in the same map; keep one`);
      continue;
    }
    const value = ck.deref(pair.value);
    fields.set(name, { value, offset: isNullScalar(value) ? keyOffset : start(value, keyOffset) });
  }
  return fields;
}

/** Reads a list; a missing or empty list is an error (it would allow nothing). */
function readList(
  ck: Checker,
  field: Field | undefined,
  mapOffset: number,
  path: string,
  what: string,
  example: string,
): { node: YamlNode | null; offset: number; path: string }[] | undefined {
  if (field === undefined) {
    ck.error(mapOffset, path, `required but missing; list the ${what}, e.g. ${example}`);
    return undefined;
  }
  const node = field.value;
  if (!isSeq(node)) {
    const hint =
      isScalar(node) && node.value !== null ? `; write a list: [${show(node)}]` : `, e.g. ${example}`;
    ck.error(field.offset, path, `must be a list of ${what}, not ${show(node)}${hint}`);
    return undefined;
  }
  if (node.items.length === 0) {
    ck.error(field.offset, path, `is empty, so it allows nothing; list the ${what}, e.g. ${example}`);
    return undefined;
  }
  return node.items.map((item, i) => {
    const n = ck.deref(item);
    return { node: n, offset: start(n, field.offset), path: `${path}[${i}]` };
  });
}

/** Reads a list of strings, rejecting non-strings and repeats; `check` returns an error or undefined. */
function readStrings(
  ck: Checker,
  field: Field | undefined,
  mapOffset: number,
  path: string,
  what: string,
  example: string,
  check: (s: string) => string | undefined,
): string[] {
  const items = readList(ck, field, mapOffset, path, what, example);
  const out: string[] = [];
  for (const item of items ?? []) {
    if (!isScalar(item.node) || typeof item.node.value !== "string") {
      ck.error(item.offset, item.path, `${show(item.node)} is not one of the ${what}; write a string`);
      continue;
    }
    const s = item.node.value;
    const problem = check(s);
    if (problem !== undefined) ck.error(item.offset, item.path, problem);
    else if (out.includes(s))
      ck.error(item.offset, item.path, `${JSON.stringify(s)} is listed twice; remove one`);
    else out.push(s);
  }
  return out;
}

function readIds(ck: Checker, field: Field, mapOffset: number, path: string, kind: "uid" | "gid"): number[] {
  const items = readList(ck, field, mapOffset, path, `${kind}s`, kind === "uid" ? "[1000]" : "[100]");
  const out: number[] = [];
  for (const item of items ?? []) {
    const v = isScalar(item.node) ? item.node.value : undefined;
    if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_ID) {
      if (out.includes(v)) ck.error(item.offset, item.path, `${kind} ${v} is listed twice; remove one`);
      else out.push(v);
    } else if (typeof v === "string" && /^\d+$/.test(v)) {
      ck.error(item.offset, item.path, `${show(item.node)} is a string; write the ${kind} as a number: ${v}`);
    } else if (typeof v === "string") {
      ck.error(
        item.offset,
        item.path,
        `${show(item.node)} is not a ${kind}; use the numeric ${kind} (see \`id\`)`,
      );
    } else {
      ck.error(item.offset, item.path, `${show(item.node)} is not a ${kind}; use an integer 0..${MAX_ID}`);
    }
  }
  return out;
}

function readBool(ck: Checker, field: Field | undefined, path: string): boolean {
  if (field === undefined) return false;
  const v = isScalar(field.value) ? field.value.value : undefined;
  if (typeof v === "boolean") return v;
  ck.error(field.offset, path, `${show(field.value)} is not true or false; write true or false`);
  return false;
}

function readCount(ck: Checker, field: Field, path: string): number | undefined {
  const v = isScalar(field.value) ? field.value.value : undefined;
  if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_COUNT) return v;
  if (typeof v === "number" && v < 0) {
    ck.error(field.offset, path, `${v} is negative; a limit is a count of 0 or more (0 allows none)`);
  } else {
    ck.error(field.offset, path, `${show(field.value)} is not a count; use an integer 0..${MAX_COUNT}`);
  }
  return undefined;
}

/** Parses a byte size: an integer, or a string like "512MiB" (suffix B, KiB, MiB, GiB, TiB). */
export function parseSize(value: unknown): bigint | string {
  const usage = "use a whole number of bytes or a string with suffix B, KiB, MiB, GiB or TiB (e.g. 1GiB)";
  if (typeof value === "number") {
    if (!Number.isInteger(value)) return `${value} is not a whole number of bytes; ${usage}`;
    if (value < 0) return `${value} is negative; a limit is 0 or more bytes`;
    if (!Number.isSafeInteger(value)) return `${value} is too large to be exact; use a suffix, e.g. 16TiB`;
    return BigInt(value);
  }
  if (typeof value !== "string")
    return `${value === null ? "nothing" : String(value)} is not a size; ${usage}`;
  const m = /^(\d+)\s*([A-Za-z]*)$/.exec(value.trim());
  const shift = m ? SIZE_SHIFT[m[2]!] : undefined;
  if (m === null || shift === undefined) {
    const q = JSON.stringify(value);
    if (value.trim().startsWith("-")) return `${q} is negative; a limit is 0 or more bytes`;
    const decimal = m ? /^([kmgt])b?$/i.exec(m[2]!) : null;
    const hint = decimal
      ? `; did you mean "${m![1]}${decimal[1]!.toUpperCase()}iB" (sizes are powers of 1024)?`
      : "";
    return `${q} is not a size; ${usage}${hint}`;
  }
  const bytes = BigInt(m[1]!) << shift;
  if (bytes > MAX_BYTES) return `${JSON.stringify(value)} is larger than 2^63-1 bytes; use a smaller size`;
  return bytes;
}

function readLimits(ck: Checker, field: Field, path: string): Partial<Limits> {
  const fields = readMap(
    ck,
    field.value,
    field.offset,
    path,
    LIMIT_KEYS,
    "{ sessions: 64, deviceFiles: 64, mappings: 1024, bytes: 1GiB }",
  );
  const out: Partial<Limits> = {};
  if (fields === undefined) return out;
  for (const key of COUNT_KEYS) {
    const f = fields.get(key);
    if (f) out[key] = readCount(ck, f, join(path, key));
  }
  const bytes = fields.get("bytes");
  if (bytes) {
    const parsed = isScalar(bytes.value)
      ? parseSize(bytes.value.value)
      : `${show(bytes.value)} is not a size; write e.g. bytes: 1GiB`;
    if (typeof parsed === "bigint") out.bytes = parsed;
    else ck.error(bytes.offset, join(path, "bytes"), parsed);
  }
  return out;
}

function readRevoke(ck: Checker, field: Field, path: string): RevokeEnforcement {
  const out = { ...DEFAULT_REVOKE };
  const fields = readMap(
    ck,
    field.value,
    field.offset,
    path,
    ["enforce", "graceMs"],
    "{ enforce: kill, graceMs: 5000 }",
  );
  if (fields === undefined) return out;
  const enforce = fields.get("enforce");
  if (enforce) {
    const v = isScalar(enforce.value) ? enforce.value.value : undefined;
    if (v === "kill" || v === "none") out.enforce = v;
    else
      ck.error(
        enforce.offset,
        join(path, "enforce"),
        `${show(enforce.value)} is not an enforcement; write kill (SIGKILL a holder that has not unmapped after graceMs) or none`,
      );
  }
  const grace = fields.get("graceMs");
  if (grace) {
    const v = isScalar(grace.value) ? grace.value.value : undefined;
    if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_GRACE_MS) out.graceMs = v;
    else
      ck.error(
        grace.offset,
        join(path, "graceMs"),
        `${show(grace.value)} is not a grace period; use an integer 0..${MAX_GRACE_MS} (milliseconds)`,
      );
  }
  return out;
}

function checkCgroupGlob(s: string): string | undefined {
  if (s === "")
    return `an empty cgroup glob matches nothing; write a path like "/system.slice/docker-*.scope"`;
  if (/[\s\0]/.test(s)) return `${JSON.stringify(s)} contains whitespace; cgroup paths have none`;
  if (!s.startsWith("/") && !s.startsWith("**")) {
    return `${JSON.stringify(s)} would match nothing: cgroup v2 paths start with "/"; write "/${s}" or "**/${s}"`;
  }
  return undefined;
}

const CONTAINER_ID = /^[0-9a-f]{64}$/;
const CONTAINER_GLOB = /^[0-9a-f*]{1,64}$/;
const POD_UID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$/;

function checkContainer(s: string): string | undefined {
  const q = JSON.stringify(s);
  const lower = s.toLowerCase();
  if (s !== lower && CONTAINER_GLOB.test(lower))
    return `${q} would match nothing: container ids are lowercase hex; write "${lower}"`;
  if (!CONTAINER_GLOB.test(s)) {
    return `${q} is not a container id; write the full 64-hex id (docker inspect --format '{{.Id}}', crictl ps --no-trunc) or a glob like "4f3c2b1a*"`;
  }
  if (s.includes("*")) {
    if (/^\*+$/.test(s))
      return `${q} matches every container but no process outside one; to say so, write cgroups: ["**"] or list the ids`;
    return undefined;
  }
  if (!CONTAINER_ID.test(s)) {
    return `${q} has ${s.length} hex digits and would match nothing: container ids have 64; write the full id, or "${s}*" to match by prefix`;
  }
  return undefined;
}

function checkPod(s: string): string | undefined {
  const q = JSON.stringify(s);
  if (POD_UID.test(s)) return undefined;
  const fixed = s.toLowerCase().replaceAll("_", "-");
  if (POD_UID.test(fixed))
    return `${q} would match nothing: pod UIDs are lowercase with dashes (kubectl get pod -o jsonpath='{.metadata.uid}'); write "${fixed}"`;
  if (s.includes("*"))
    return `${q}: pods takes exact pod UIDs, not globs; list each UID, or match by cgroups: ["/kubepods.slice/**"]`;
  return `${q} is not a pod UID; write the pod's metadata.uid, e.g. "0c4f2a9e-1111-2222-3333-444455556666" (kubectl get pod NAME -o jsonpath='{.metadata.uid}')`;
}

function checkDeviceGlob(s: string): string | undefined {
  const q = JSON.stringify(s);
  if (!DEVICE_GLOB.test(s)) {
    return `${q} is not a device id or glob; device ids are BDFs like 0000:03:00.0 or simulated names like sim0 (letters, digits, ".", ":", "-", "_", and "*")`;
  }
  if (BDF_NO_DOMAIN.test(s))
    return `${q} lacks the PCI domain and would match nothing; write "0000:${s.toLowerCase()}"`;
  if (BDF_UPPER.test(s) && s !== s.toLowerCase()) {
    return `${q} would match nothing: device ids use lowercase hex as in sysfs; write "${s.toLowerCase()}"`;
  }
  return undefined;
}

function checkRegion(s: string): string | undefined {
  if (s === "*" || (REGION_NAMES as readonly string[]).includes(s)) return undefined;
  const upper = s.toUpperCase();
  const hint = (REGION_NAMES as readonly string[]).includes(upper) ? `; did you mean "${upper}"?` : "";
  return `${JSON.stringify(s)} is not a region; use BAR0..BAR5, ROM, CONFIG, VGA, or "*" for all${hint}`;
}

function checkAttribute(s: string): string | undefined {
  if ((ATTRIBUTES as readonly string[]).includes(s)) return undefined;
  const upper = s.toUpperCase();
  const hint = (ATTRIBUTES as readonly string[]).includes(upper) ? `; did you mean "${upper}"?` : "";
  return `${JSON.stringify(s)} is not an attribute; use UC or WC (WB only on simulated memory)${hint}`;
}

function checkProt(s: string): string | undefined {
  if ((PROTS as readonly string[]).includes(s)) return undefined;
  const hint =
    s === "ro" || s === "read"
      ? `; did you mean "r"?`
      : s === "w" || s === "wr"
        ? `; did you mean "rw"?`
        : "";
  return `${JSON.stringify(s)} is not a prot; use r or rw${hint}`;
}

function readMatch(ck: Checker, field: Field | undefined, ruleOffset: number, path: string): IdentityMatch {
  const match: IdentityMatch = { any: false };
  const example =
    "match: { any: true } to match every identity, or list uids, gids, cgroups, containers or pods";
  if (field === undefined) {
    ck.error(
      ruleOffset,
      path,
      `required but missing; a rule without match would match nobody: write ${example}`,
    );
    return match;
  }
  const fields = readMap(ck, field.value, field.offset, path, MATCH_KEYS, "{ uids: [1000] }");
  if (fields === undefined) return match;
  const any = fields.get("any");
  if (any) match.any = readBool(ck, any, join(path, "any"));
  const uids = fields.get("uids");
  if (uids) match.uids = readIds(ck, uids, field.offset, join(path, "uids"), "uid");
  const gids = fields.get("gids");
  if (gids) match.gids = readIds(ck, gids, field.offset, join(path, "gids"), "gid");
  const cgroups = fields.get("cgroups");
  if (cgroups) {
    match.cgroups = readStrings(
      ck,
      cgroups,
      field.offset,
      join(path, "cgroups"),
      "cgroup globs",
      '["/system.slice/docker-*.scope"]',
      checkCgroupGlob,
    );
  }
  const containers = fields.get("containers");
  if (containers) {
    match.containers = readStrings(
      ck,
      containers,
      field.offset,
      join(path, "containers"),
      "container ids",
      `["${"4f3c2b1a".repeat(8)}"]`,
      checkContainer,
    );
  }
  const pods = fields.get("pods");
  if (pods) {
    match.pods = readStrings(
      ck,
      pods,
      field.offset,
      join(path, "pods"),
      "pod UIDs",
      '["0c4f2a9e-1111-2222-3333-444455556666"]',
      checkPod,
    );
  }
  const narrowed =
    uids !== undefined ||
    gids !== undefined ||
    cgroups !== undefined ||
    containers !== undefined ||
    pods !== undefined;
  if (match.any && narrowed) {
    ck.error(
      any!.offset,
      join(path, "any"),
      "any: true cannot be combined with uids, gids, cgroups, containers or pods (all given matchers must match, so it would add nothing); remove any, or the other matchers to match everyone",
    );
  } else if (!match.any && !narrowed) {
    ck.error(field.offset, path, `matches nobody; write ${example}`);
  }
  return match;
}

interface RuleDraft {
  rule: Rule;
  limits: Partial<Limits>;
}

function readRule(
  ck: Checker,
  node: YamlNode | null,
  offset: number,
  path: string,
  names: Map<string, { path: string; line: number }>,
): RuleDraft | undefined {
  const fields = readMap(ck, node, offset, path, RULE_KEYS, "{ name: ..., match: ..., devices: ..., ... }");
  if (fields === undefined) return undefined;
  const at = start(node, offset);
  const rule: Rule = {
    name: "",
    line: ck.line(at),
    match: { any: false },
    devices: [],
    regions: [],
    attributes: [],
    prot: [],
    readWrite: false,
    allowDeviceFd: false,
    revoke: { ...DEFAULT_REVOKE },
    limits: { ...DEFAULT_LIMITS },
  };

  const name = fields.get("name");
  const namePath = join(path, "name");
  if (name === undefined) {
    ck.error(at, namePath, "required but missing; give the rule a unique name, e.g. name: sim-any-local");
  } else if (!isScalar(name.value) || typeof name.value.value !== "string") {
    ck.error(name.offset, namePath, `${show(name.value)} is not a name; write a string like sim-any-local`);
  } else if (!RULE_NAME.test(name.value.value)) {
    ck.error(
      name.offset,
      namePath,
      `${show(name.value)} is not a usable rule name (it becomes a metric label); use letters, digits, "-", "_" and ".", starting with a letter or digit, at most 64 characters`,
    );
  } else {
    rule.name = name.value.value;
    const first = names.get(rule.name);
    if (first !== undefined) {
      ck.error(
        name.offset,
        namePath,
        `"${rule.name}" is already the name of ${first.path} (line ${first.line}); rule names must be unique`,
      );
    } else {
      names.set(rule.name, { path, line: rule.line });
    }
  }

  rule.match = readMatch(ck, fields.get("match"), at, join(path, "match"));
  rule.devices = readStrings(
    ck,
    fields.get("devices"),
    at,
    join(path, "devices"),
    "device ids or globs",
    '["sim*"] or ["0000:03:00.0"]',
    checkDeviceGlob,
  );
  rule.regions = readStrings(
    ck,
    fields.get("regions"),
    at,
    join(path, "regions"),
    "regions",
    '[BAR0, BAR2] or ["*"]',
    checkRegion,
  ) as Rule["regions"];
  rule.attributes = readStrings(
    ck,
    fields.get("attributes"),
    at,
    join(path, "attributes"),
    "attributes",
    "[UC, WC]",
    checkAttribute,
  ) as Attribute[];
  rule.prot = readStrings(
    ck,
    fields.get("prot"),
    at,
    join(path, "prot"),
    "prots",
    "[r, rw]",
    checkProt,
  ) as Prot[];
  rule.readWrite = readBool(ck, fields.get("readWrite"), join(path, "readWrite"));
  rule.allowDeviceFd = readBool(ck, fields.get("allowDeviceFd"), join(path, "allowDeviceFd"));
  const revoke = fields.get("revoke");
  if (revoke) rule.revoke = readRevoke(ck, revoke, join(path, "revoke"));
  const limits = fields.get("limits");
  return { rule, limits: limits ? readLimits(ck, limits, join(path, "limits")) : {} };
}

function freezePolicy(policy: Policy): Policy {
  for (const rule of policy.rules) {
    const m = rule.match;
    for (const list of [
      m.uids,
      m.gids,
      m.cgroups,
      m.containers,
      m.pods,
      rule.devices,
      rule.regions,
      rule.attributes,
      rule.prot,
    ]) {
      if (list) Object.freeze(list);
    }
    Object.freeze(m);
    Object.freeze(rule.limits);
    Object.freeze(rule.revoke);
    Object.freeze(rule);
  }
  Object.freeze(policy.rules);
  return Object.freeze(policy);
}

/**
 * Parses and validates a version-1 policy (YAML or JSON text). Pure. Collects every error and
 * throws one PolicyError listing them all; on success returns a deeply frozen Policy.
 */
export function parsePolicy(text: string, source: string): Policy {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const ck = new Checker(source, doc, lines);

  const syntax = [...doc.errors, ...doc.warnings];
  if (syntax.length > 0) {
    for (const e of syntax) ck.error(e.pos[0], "", `YAML: ${e.message.split("\n")[0]}`);
    throw new PolicyError(ck.sorted(), source);
  }

  const root = ck.deref(doc.contents);
  if (isNullScalar(root)) {
    throw new PolicyError(
      [`${source}:1:1: top level: the policy is empty; start with "version: 1" and a rules list`],
      source,
    );
  }
  const top = readMap(ck, root, 0, "", TOP_KEYS, "{ version: 1, rules: [...] }");
  const rules: Rule[] = [];
  if (top !== undefined) {
    const rootOffset = start(root, 0);
    const version = top.get("version");
    if (version === undefined) {
      ck.error(rootOffset, "version", 'required but missing; add "version: 1" at the top');
    } else if (!isScalar(version.value) || version.value.value !== 1) {
      const v = isScalar(version.value) ? version.value.value : undefined;
      const message =
        typeof v === "string" && v.trim() === "1"
          ? `"1" is a string; write version: 1 without quotes`
          : `${show(version.value)} is not a version this broker reads; it reads version 1`;
      ck.error(version.offset, "version", message);
    }

    let defaults: Partial<Limits> = {};
    const defaultsField = top.get("defaults");
    if (defaultsField) {
      const fields = readMap(
        ck,
        defaultsField.value,
        defaultsField.offset,
        "defaults",
        DEFAULTS_KEYS,
        "{ limits: {...} }",
      );
      const limits = fields?.get("limits");
      if (limits) defaults = readLimits(ck, limits, "defaults.limits");
    }

    const rulesField = top.get("rules");
    const names = new Map<string, { path: string; line: number }>();
    if (rulesField === undefined) {
      ck.error(
        rootOffset,
        "rules",
        "required but missing; add a rules list (an empty list denies everything)",
      );
    } else if (!isSeq(rulesField.value)) {
      ck.error(rulesField.offset, "rules", `must be a list of rules, not ${show(rulesField.value)}`);
    } else {
      rulesField.value.items.forEach((item, i) => {
        const node = ck.deref(item);
        const draft = readRule(ck, node, start(node, rulesField.offset), `rules[${i}]`, names);
        if (draft === undefined) return;
        draft.rule.limits = { ...DEFAULT_LIMITS, ...defaults, ...draft.limits };
        rules.push(draft.rule);
      });
    }
  }

  if (ck.count > 0) throw new PolicyError(ck.sorted(), source);
  const digest = createHash("sha256").update(text, "utf8").digest("hex");
  return freezePolicy({ version: 1, rules, source, digest });
}
