// Policy messages: how a load-time error reads. Renders a YAML value for a message, finds the
// allowed word a typo was meant to be ("did you mean"), and checks one string of a list (cgroup
// glob, container id, pod UID, device glob, region, attribute, prot), returning what is wrong with
// it and what to write instead. Pure text: never sees a position, never records an error (reader.ts
// does), never reads a map or list (fields.ts does). A change here changes what users read: the
// wording is pinned by schema.test.ts.

import { isMap, isScalar, type Node as YamlNode } from "yaml";
import { ATTRIBUTES, PROTS, REGION_NAMES } from "./types.js";

const DEVICE_GLOB = /^[A-Za-z0-9_.:*-]{1,128}$/;
const BDF_NO_DOMAIN = /^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/;
const BDF_UPPER = /^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$/;
const CONTAINER_ID = /^[0-9a-f]{64}$/;
const CONTAINER_GLOB = /^[0-9a-f*]{1,64}$/;
const POD_UID = /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$/;

/** A short rendering of a YAML value for messages: strings quoted, numbers and booleans as written. */
export function show(node: YamlNode | null): string {
  if (node === null) return "nothing";
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return "nothing";
    if (typeof v === "string") return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}...` : v);
    return String(v);
  }
  return isMap(node) ? "a map" : "a list";
}

/** The allowed word closest to a typo, if it is close enough to be what was meant. */
export function closest(word: string, options: readonly string[]): string | undefined {
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

// Checks of one string in a list: undefined when it is usable, else what is wrong and what to write.

export function checkCgroupGlob(s: string): string | undefined {
  if (s === "")
    return `an empty cgroup glob matches nothing; write a path like "/system.slice/docker-*.scope"`;
  if (/[\s\0]/.test(s)) return `${JSON.stringify(s)} contains whitespace; cgroup paths have none`;
  if (!s.startsWith("/") && !s.startsWith("**")) {
    return `${JSON.stringify(s)} would match nothing: cgroup v2 paths start with "/"; write "/${s}" or "**/${s}"`;
  }
  return undefined;
}

export function checkContainer(s: string): string | undefined {
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

export function checkPod(s: string): string | undefined {
  const q = JSON.stringify(s);
  if (POD_UID.test(s)) return undefined;
  const fixed = s.toLowerCase().replaceAll("_", "-");
  if (POD_UID.test(fixed))
    return `${q} would match nothing: pod UIDs are lowercase with dashes (kubectl get pod -o jsonpath='{.metadata.uid}'); write "${fixed}"`;
  if (s.includes("*"))
    return `${q}: pods takes exact pod UIDs, not globs; list each UID, or match by cgroups: ["/kubepods.slice/**"]`;
  return `${q} is not a pod UID; write the pod's metadata.uid, e.g. "0c4f2a9e-1111-2222-3333-444455556666" (kubectl get pod NAME -o jsonpath='{.metadata.uid}')`;
}

export function checkDeviceGlob(s: string): string | undefined {
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

export function checkRegion(s: string): string | undefined {
  if (s === "*" || (REGION_NAMES as readonly string[]).includes(s)) return undefined;
  const upper = s.toUpperCase();
  const hint = (REGION_NAMES as readonly string[]).includes(upper) ? `; did you mean "${upper}"?` : "";
  return `${JSON.stringify(s)} is not a region; use BAR0..BAR5, ROM, CONFIG, VGA, or "*" for all${hint}`;
}

export function checkAttribute(s: string): string | undefined {
  if ((ATTRIBUTES as readonly string[]).includes(s)) return undefined;
  const upper = s.toUpperCase();
  const hint = (ATTRIBUTES as readonly string[]).includes(upper) ? `; did you mean "${upper}"?` : "";
  return `${JSON.stringify(s)} is not an attribute; use UC or WC (WB only on simulated memory)${hint}`;
}

export function checkProt(s: string): string | undefined {
  if ((PROTS as readonly string[]).includes(s)) return undefined;
  const hint =
    s === "ro" || s === "read"
      ? `; did you mean "r"?`
      : s === "w" || s === "wr"
        ? `; did you mean "rw"?`
        : "";
  return `${JSON.stringify(s)} is not a prot; use r or rw${hint}`;
}
