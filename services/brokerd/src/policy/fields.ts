// Policy fields: what each field of a version-1 policy may hold (version, defaults, a rule and
// its name, match, devices, regions, attributes, prot, revoke, limits, byte sizes) and the error
// for each way it can be wrong. Owns the closed key sets and the value ranges. Never formats a
// position (reader.ts does), never decides a request (evaluate.ts does), never throws: every
// problem is reported to the Checker, so one load lists all of them. Never accepts a value it
// does not fully understand: a typo must not silently widen or narrow what the broker allows.

import { isScalar, type Node as YamlNode } from "yaml";
import {
  checkAttribute,
  checkCgroupGlob,
  checkContainer,
  checkDeviceGlob,
  checkPod,
  checkProt,
  checkRegion,
  show,
} from "./messages.js";
import { type Checker, type Field, join, readBool, readList, readMap, readStrings, start } from "./reader.js";
import {
  type Attribute,
  DEFAULT_LIMITS,
  DEFAULT_REVOKE,
  type IdentityMatch,
  type Limits,
  type Prot,
  type RevokeEnforcement,
  type Rule,
} from "./types.js";

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
const MATCH_KEYS = ["any", "uids", "gids", "cgroups", "containers", "pods", "claims"] as const;
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
const MAX_GRACE_MS = 3_600_000;

/** The version field: required, and the number 1. */
export function readVersion(ck: Checker, version: Field | undefined, rootOffset: number): void {
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
}

/** The defaults map: the limits a rule that omits one gets. */
export function readDefaults(ck: Checker, field: Field): Partial<Limits> {
  const fields = readMap(ck, field.value, field.offset, "defaults", DEFAULTS_KEYS, "{ limits: {...} }");
  const limits = fields?.get("limits");
  return limits ? readLimits(ck, limits, "defaults.limits") : {};
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

function readMatch(ck: Checker, field: Field | undefined, ruleOffset: number, path: string): IdentityMatch {
  const match: IdentityMatch = { any: false };
  const example =
    "match: { any: true } to match every identity, or list uids, gids, cgroups, containers, pods or claims";
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
  const claims = fields.get("claims");
  if (claims) {
    if (readBool(ck, claims, join(path, "claims"))) match.claims = true;
    else
      ck.error(
        claims.offset,
        join(path, "claims"),
        "claims: false matches nothing more than leaving it out; write claims: true (the pod's bound claims) or remove it",
      );
  }
  const narrowed =
    claims !== undefined ||
    uids !== undefined ||
    gids !== undefined ||
    cgroups !== undefined ||
    containers !== undefined ||
    pods !== undefined;
  if (match.any && narrowed) {
    ck.error(
      any!.offset,
      join(path, "any"),
      "any: true cannot be combined with uids, gids, cgroups, containers, pods or claims (all given matchers must match, so it would add nothing); remove any, or the other matchers to match everyone",
    );
  } else if (!match.any && !narrowed) {
    ck.error(field.offset, path, `matches nobody; write ${example}`);
  }
  return match;
}

/** A rule read from the file; its limits are merged with defaults.limits by the caller. */
export interface RuleDraft {
  rule: Rule;
  limits: Partial<Limits>;
}

/** Where each rule name was first given, so a repeat can point at it. */
export type RuleNames = Map<string, { path: string; line: number }>;

/**
 * A rule's name: required, usable as a metric label, unique in the file. Returns "" when there is
 * no usable name (after reporting why).
 */
function readRuleName(
  ck: Checker,
  name: Field | undefined,
  at: number,
  path: string,
  line: number,
  names: RuleNames,
): string {
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
    const ruleName = name.value.value;
    const first = names.get(ruleName);
    if (first !== undefined) {
      ck.error(
        name.offset,
        namePath,
        `"${ruleName}" is already the name of ${first.path} (line ${first.line}); rule names must be unique`,
      );
    } else {
      names.set(ruleName, { path, line });
    }
    return ruleName;
  }
  return "";
}

/** One entry of the rules list. Returns undefined (after reporting) when it is not a map. */
export function readRule(
  ck: Checker,
  node: YamlNode | null,
  offset: number,
  path: string,
  names: RuleNames,
): RuleDraft | undefined {
  const fields = readMap(ck, node, offset, path, RULE_KEYS, "{ name: ..., match: ..., devices: ..., ... }");
  if (fields === undefined) return undefined;
  const at = start(node, offset);
  const line = ck.line(at);
  const rule: Rule = {
    name: readRuleName(ck, fields.get("name"), at, path, line, names),
    line,
    match: readMatch(ck, fields.get("match"), at, join(path, "match")),
    devices: readStrings(
      ck,
      fields.get("devices"),
      at,
      join(path, "devices"),
      "device ids or globs",
      '["sim*"] or ["0000:03:00.0"]',
      checkDeviceGlob,
    ),
    regions: readStrings(
      ck,
      fields.get("regions"),
      at,
      join(path, "regions"),
      "regions",
      '[BAR0, BAR2] or ["*"]',
      checkRegion,
    ) as Rule["regions"],
    attributes: readStrings(
      ck,
      fields.get("attributes"),
      at,
      join(path, "attributes"),
      "attributes",
      "[UC, WC]",
      checkAttribute,
    ) as Attribute[],
    prot: readStrings(
      ck,
      fields.get("prot"),
      at,
      join(path, "prot"),
      "prots",
      "[r, rw]",
      checkProt,
    ) as Prot[],
    readWrite: readBool(ck, fields.get("readWrite"), join(path, "readWrite")),
    allowDeviceFd: readBool(ck, fields.get("allowDeviceFd"), join(path, "allowDeviceFd")),
    revoke: { ...DEFAULT_REVOKE },
    limits: { ...DEFAULT_LIMITS },
  };
  const revoke = fields.get("revoke");
  if (revoke) rule.revoke = readRevoke(ck, revoke, join(path, "revoke"));
  const limits = fields.get("limits");
  return { rule, limits: limits ? readLimits(ck, limits, join(path, "limits")) : {} };
}
