// Policy: default-deny rules from identity to devices, regions, attributes, prot and limits
// (docs/design.md §3, §7). The public face of policy/: schema.ts validates the file format, glob.ts
// matches device and cgroup globs, evaluate.ts decides requests, load.ts is the only I/O.

export {
  type AccessRequest,
  authorizeAccess,
  authorizeDevice,
  authorizeIdentity,
  authorizeMapping,
  type Decision,
  type DenyReason,
  limitsFor,
  type MappingRequest,
  matchesDevice,
  matchesIdentity,
  matchesRegion,
} from "./evaluate.js";
export { type GlobOptions, globMatch } from "./glob.js";
export { loadPolicyFile, MAX_POLICY_FILE_BYTES } from "./load.js";
export {
  ATTRIBUTES,
  type Attribute,
  type ClaimView,
  DEFAULT_LIMITS,
  type Identity,
  type IdentityMatch,
  type Limits,
  type Policy,
  PolicyError,
  PROTS,
  type Prot,
  parsePolicy,
  parseSize,
  REGION_NAMES,
  type RegionName,
  type Rule,
  UNNAMED_LIMITS,
} from "./schema.js";
