// Policy evaluation: decides, from a parsed Policy and a kernel-verified Identity, whether a
// Session may do anything at all, open a Device, create a Mapping, or use ReadRegion/WriteRegion,
// and which Limits apply. Pure: values in, a Decision out; no I/O, no clocks, no state beyond a
// cache of compiled globs. Default-deny: anything no rule allows is denied, and every denial names
// the most specific reason and what to change. Never widens a rule: the first rule in file order
// that matches the whole request decides it.

import { cgroupIdentityOf, parseCgroup } from "../identity/container.js";
import { type CompiledGlob, compileGlob, matchCompiled } from "./glob.js";
import type { Attribute, ClaimView, Identity, IdentityMatch, Limits, Policy, Prot, Rule } from "./types.js";
import { UNNAMED_LIMITS } from "./types.js";

export type DenyReason = "no_rule" | "device" | "region" | "attribute" | "prot" | "read_write";
export type Decision = { allow: true; rule: Rule } | { allow: false; reason: DenyReason; message: string };

export interface MappingRequest {
  device: string;
  region: string;
  attribute: Attribute;
  prot: Prot;
}

export interface AccessRequest {
  device: string;
  region: string;
  write: boolean;
}

// Patterns come only from validated policy files, so this cache stays small; the cap is a backstop.
const globCache = new Map<string, CompiledGlob>();
function compiled(pattern: string): CompiledGlob {
  let c = globCache.get(pattern);
  if (c === undefined) {
    if (globCache.size >= 4096) globCache.clear();
    c = compileGlob(pattern);
    globCache.set(pattern, c);
  }
  return c;
}

/** The devices bound (claims/book.ts) to the identity's pod, read from a trusted cgroup path only. */
function boundDevices(claims: ClaimView | undefined, id: Identity): ReadonlySet<string> | undefined {
  const pod = cgroupIdentityOf(id).podUid;
  return pod === undefined ? undefined : claims?.devicesOf(pod);
}

/**
 * Does the rule's match select this identity? All given matchers must match; nothing given matches
 * nobody. `claims` is the policy's view of the bound claims (match.claims matches nobody without it).
 */
export function matchesIdentity(match: IdentityMatch, id: Identity, claims?: ClaimView): boolean {
  if (match.any) return true;
  if (
    match.claims === undefined &&
    match.uids === undefined &&
    match.gids === undefined &&
    match.cgroups === undefined &&
    match.containers === undefined &&
    match.pods === undefined
  )
    return false;
  if (match.uids !== undefined && !match.uids.includes(id.uid)) return false;
  if (match.gids !== undefined && !match.gids.includes(id.gid)) return false;
  if (match.cgroups !== undefined) {
    // An unknown cgroup ("") matches no cgroup glob, not even "**".
    if (id.cgroup === "") return false;
    if (!match.cgroups.some((g) => matchCompiled(compiled(g), id.cgroup, true))) return false;
  }
  if (match.containers !== undefined || match.pods !== undefined) {
    // Read from the same kernel-reported cgroup path, only when no unprivileged user could have
    // named it (cgroup-trust.ts); outermost container wins (container.ts).
    const c = cgroupIdentityOf(id);
    if (match.containers !== undefined) {
      const cid = c.containerId;
      if (cid === undefined || !match.containers.some((g) => matchCompiled(compiled(g), cid, false)))
        return false;
    }
    if (match.pods !== undefined && (c.podUid === undefined || !match.pods.includes(c.podUid))) return false;
  }
  if (match.claims === true && !(boundDevices(claims, id)?.size ?? 0)) return false;
  return true;
}

export function matchesDevice(rule: Rule, device: string): boolean {
  return rule.devices.some((g) => matchCompiled(compiled(g), device, false));
}

/** The rule's device globs and, for a match.claims rule, the devices bound to the identity's pod. */
function allowsDevice(p: Policy, rule: Rule, id: Identity, device: string): boolean {
  if (!matchesDevice(rule, device)) return false;
  return rule.match.claims !== true || (boundDevices(p.claims, id)?.has(device) ?? false);
}

export function matchesRegion(rule: Rule, region: string): boolean {
  return rule.regions.some((r) => r === "*" || r === region);
}

// --- messages -----------------------------------------------------------------------------------

/** Renders a client-supplied value safely: plain if it is a tame token, else JSON-quoted and cut short. */
function token(value: string): string {
  if (/^[A-Za-z0-9_.:*/-]{1,128}$/.test(value)) return value;
  return JSON.stringify(value.length > 128 ? `${value.slice(0, 128)}...` : value);
}

function quoted(value: string): string {
  return JSON.stringify(value.length > 256 ? `${value.slice(0, 256)}...` : value);
}

function who(id: Identity): string {
  const cgroup = id.cgroup === "" ? "cgroup unknown" : `cgroup ${quoted(id.cgroup)}`;
  // A path shaped like a container's that the trust rule refused: say why no containers:/pods: rule matched.
  const shape = id.cgroupTrusted ? {} : parseCgroup(id.cgroup);
  const untrusted =
    shape.containerId !== undefined || shape.podUid !== undefined
      ? ", a cgroup not trusted to name a container or pod: see docs/security.md"
      : "";
  return `uid ${id.uid} (gid ${id.gid}, ${cgroup}${untrusted})`;
}

/** `rule "a" allows` or `rules "a", "b" allow` */
function rulesAllow(rules: readonly Rule[]): string {
  const names = rules.map((r) => `"${r.name}"`).join(", ");
  return rules.length === 1 ? `policy rule ${names} allows` : `policy rules ${names} allow`;
}

function union<T extends string>(rules: readonly Rule[], pick: (r: Rule) => readonly T[]): T[] {
  const out: T[] = [];
  for (const r of rules) for (const v of pick(r)) if (!out.includes(v)) out.push(v);
  return out;
}

function deny(reason: DenyReason, message: string): Decision {
  return { allow: false, reason, message };
}

function noRule(p: Policy, id: Identity): Decision {
  return deny(
    "no_rule",
    `policy denies ${who(id)} everything: no rule in ${p.source} matches this identity; add a rule whose match names it`,
  );
}

// --- the funnel ---------------------------------------------------------------------------------

interface Stage {
  reason: DenyReason;
  allows: (r: Rule) => boolean;
  /** the denial, given the rules that survived every earlier stage */
  message: (rules: readonly Rule[]) => string;
}

/**
 * Narrows the rules matching the identity stage by stage; the first stage that leaves none is the
 * most specific reason. Filtering keeps file order, so the survivor list's head is the first match.
 */
function decide(p: Policy, id: Identity, stages: readonly Stage[]): Decision {
  let rules = p.rules.filter((r) => matchesIdentity(r.match, id, p.claims));
  if (rules.length === 0) return noRule(p, id);
  for (const stage of stages) {
    const next = rules.filter(stage.allows);
    if (next.length === 0) return deny(stage.reason, stage.message(rules));
    rules = next;
  }
  return { allow: true, rule: rules[0]! };
}

function deviceStage(p: Policy, id: Identity, device: string): Stage {
  return {
    reason: "device",
    allows: (r) => allowsDevice(p, r, id, device),
    message: (rules) => {
      const claimed = rules.some((r) => r.match.claims === true);
      const bound = claimed ? [...(boundDevices(p.claims, id) ?? [])].sort() : [];
      return (
        `${rulesAllow(rules)} devices ${union(rules, (r) => r.devices).join(", ")} to uid ${id.uid}, not ${token(device)}` +
        (claimed
          ? ` (of those, only the devices bound to this pod's claims: ${bound.join(", ") || "none"})`
          : "") +
        "; use one of those devices or ask the operator to extend the rule"
      );
    },
  };
}

function regionStage(device: string, region: string): Stage {
  return {
    reason: "region",
    allows: (r) => matchesRegion(r, region),
    message: (rules) => {
      const regions = union(rules, (r) => r.regions);
      return (
        `${rulesAllow(rules)} regions ${regions.join(", ")} on ${token(device)}, not ${token(region)}; ` +
        `request ${regions.join(" or ")} or ask the operator to extend the rule`
      );
    },
  };
}

/** What may this identity do at all? A uid no rule names is denied every call. */
export function authorizeIdentity(p: Policy, id: Identity): Decision {
  return decide(p, id, []);
}

/** May this identity open this device? */
export function authorizeDevice(p: Policy, id: Identity, device: string): Decision {
  return decide(p, id, [deviceStage(p, id, device)]);
}

/**
 * May this identity map a region with this attribute and prot? The first rule (in file order)
 * matching identity + device + region + attribute + prot wins; its allowDeviceFd and limits apply.
 */
export function authorizeMapping(p: Policy, id: Identity, req: MappingRequest): Decision {
  const at = `${token(req.device)} ${token(req.region)}`;
  return decide(p, id, [
    deviceStage(p, id, req.device),
    regionStage(req.device, req.region),
    {
      reason: "attribute",
      allows: (r) => r.attributes.includes(req.attribute),
      message: (rules) => {
        const attributes = union(rules, (r) => r.attributes);
        return (
          `${rulesAllow(rules)} attributes ${attributes.join(", ")} on ${at}, not ${token(req.attribute)}; ` +
          `request ${attributes.join(" or ")} or ask the operator to extend the rule`
        );
      },
    },
    {
      reason: "prot",
      allows: (r) => r.prot.includes(req.prot),
      message: (rules) => {
        const prots = union(rules, (r) => r.prot);
        return (
          `${rulesAllow(rules)} prot ${prots.join(", ")} for ${token(req.attribute)} mappings of ${at}, not ${token(req.prot)}; ` +
          `request ${prots.join(" or ")} or ask the operator to extend the rule`
        );
      },
    },
  ]);
}

/** ReadRegion/WriteRegion through the broker: needs readWrite: true, and prot rw for writes. */
export function authorizeAccess(p: Policy, id: Identity, req: AccessRequest): Decision {
  const at = `${token(req.device)} ${token(req.region)}`;
  const stages: Stage[] = [
    deviceStage(p, id, req.device),
    regionStage(req.device, req.region),
    {
      reason: "read_write",
      allows: (r) => r.readWrite,
      message: (rules) =>
        `${rulesAllow(rules)} mappings of ${at} but not ReadRegion/WriteRegion (readWrite is false); ` +
        "map the region instead or ask the operator to set readWrite: true",
    },
  ];
  if (req.write) {
    stages.push({
      reason: "prot",
      allows: (r) => r.prot.includes("rw"),
      message: (rules) =>
        `${rulesAllow(rules)} only reads of ${at} (prot r), not WriteRegion; ` +
        "use ReadRegion or ask the operator to add rw to the rule's prot",
    });
  }
  return decide(p, id, stages);
}

/**
 * The Limits of the first rule matching the identity (and the device, if given); zero limits if
 * none does. Note this rule can differ from the one authorizeMapping picks for a given request.
 */
export function limitsFor(p: Policy, id: Identity, device?: string): Limits {
  for (const r of p.rules) {
    if (matchesIdentity(r.match, id, p.claims) && (device === undefined || allowsDevice(p, r, id, device)))
      return r.limits;
  }
  return UNNAMED_LIMITS;
}
