// Policy types: what a parsed Policy is (rules, identity matchers, limits, revoke enforcement),
// the built-in defaults, and PolicyError, the one error a policy that failed to load is reported
// with. Data only: never parses, never validates, never decides a request, imports nothing.
// Everything else in policy/ imports from here; this file imports from none of them.

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
  /**
   * true: the identity's pod (read from the cgroup path as for pods) holds a claim bound through
   * AdminService.BindClaim, and the rule's devices are narrowed to the devices bound to that pod.
   */
  claims?: boolean;
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

export interface Policy {
  version: 1;
  /** in file order; the first rule that matches a request decides it */
  rules: Rule[];
  /** the file path, or "<inline>" */
  source: string;
  /** sha256 hex of the policy text */
  digest: string;
  /** The bound claims (claims/book.ts) rules with match.claims read; absent: such rules match nobody. */
  claims?: ClaimView;
}

/** What the policy may ask of the bound claims: the devices bound to a pod, over all of its claims. */
export interface ClaimView {
  devicesOf(podUid: string): ReadonlySet<string> | undefined;
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
