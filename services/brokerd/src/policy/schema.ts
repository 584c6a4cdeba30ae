// Policy schema: the version-1 policy file format (below) and parsePolicy, which composes its
// validation: reader.ts reads the source with file:line:col positions, fields.ts checks each
// field, messages.ts words what is wrong, types.ts says what a parsed Policy is (re-exported
// here). Owns the top level (version, defaults, the rules list) and the frozen result. Pure: never
// reads files (load.ts does) and never decides a request (evaluate.ts does). Never accepts a file
// it does not fully understand: unknown keys, wrong types and empty matchers are errors, because a
// typo must not silently widen or narrow what the broker allows.
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
 *         claims: true               # optional: the caller's pod (read as for pods) holds a
 *                                    # Kubernetes ResourceClaim the node agent bound
 *                                    # (AdminService.BindClaim), and the rule's devices are narrowed
 *                                    # to the devices bound to that pod; unbinding revokes them.
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
import { isSeq } from "yaml";
import { type RuleNames, readDefaults, readRule, readVersion } from "./fields.js";
import { show } from "./messages.js";
import { isNullScalar, readMap, readSource, start } from "./reader.js";
import { DEFAULT_LIMITS, type Limits, type Policy, PolicyError, type Rule } from "./types.js";

export { parseSize } from "./fields.js";
export {
  ATTRIBUTES,
  type Attribute,
  type ClaimView,
  DEFAULT_LIMITS,
  DEFAULT_REVOKE,
  type Identity,
  type IdentityMatch,
  type Limits,
  type Policy,
  PolicyError,
  PROTS,
  type Prot,
  REGION_NAMES,
  type RegionName,
  type RevokeEnforcement,
  type Rule,
  UNNAMED_LIMITS,
} from "./types.js";

const TOP_KEYS = ["version", "defaults", "rules"] as const;

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
  const { ck, root } = readSource(text, source);
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
    readVersion(ck, top.get("version"), rootOffset);
    const defaultsField = top.get("defaults");
    const defaults: Partial<Limits> = defaultsField ? readDefaults(ck, defaultsField) : {};

    const rulesField = top.get("rules");
    const names: RuleNames = new Map();
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
