// The filesystem side of cgroup-trust.ts: finds brokerd's cgroup mounts (once, from
// /proc/self/mountinfo), lstats the directories the rule asks about, and reads a client's cgroup
// around the check so that a process that moved meanwhile is not believed. Reads only; never
// writes to the cgroup tree, never decides the rule itself (cgroup-trust.ts does).
import { lstatSync, readFileSync } from "node:fs";
import {
  type CgroupMount,
  type CgroupStat,
  type CgroupVerdict,
  cgroupMounts,
  type Hierarchy,
  judgeCgroup,
} from "./cgroup-trust.js";
import { parseCgroup } from "./container.js";

let mounts: Partial<Record<Hierarchy, CgroupMount>> | undefined;

/** brokerd's cgroup mounts; its mount namespace does not change while it runs. */
export function brokerdCgroupMounts(): Partial<Record<Hierarchy, CgroupMount>> {
  if (mounts === undefined) {
    try {
      mounts = cgroupMounts(readFileSync("/proc/self/mountinfo", "utf8"));
    } catch {
      mounts = {};
    }
  }
  return mounts;
}

/** lstat: owner and mode, or undefined when the path is gone or unreadable. */
export function lstatCgroup(path: string): CgroupStat | undefined {
  try {
    const st = lstatSync(path);
    return { uid: st.uid, mode: st.mode };
  } catch {
    return undefined;
  }
}

/** The rule on the real filesystem, for a path of the given hierarchy. */
export function judgeCgroupPath(path: string, hierarchy: Hierarchy): CgroupVerdict {
  const mount = brokerdCgroupMounts()[hierarchy];
  if (mount === undefined)
    return {
      trusted: false,
      why: `no ${hierarchy === "v2" ? "cgroup2" : "name=systemd"} mount visible to brokerd`,
    };
  return judgeCgroup(path, mount, lstatCgroup);
}

/** A process's cgroup as brokerd read it, and whether that path may name a container or pod. */
export interface CgroupReading {
  cgroup: string;
  cgroupTrusted: boolean;
}

/**
 * Reads `read()` (the pid's /proc/<pid>/cgroup), checks the path when it names a container or pod,
 * and reads again: trusted only if the path passed and the process is still at the same path.
 * (The chain check alone already holds against renames, which need a root-controlled parent; the
 * second read makes sure the verdict is about where the process is.)
 */
export function readVerifiedCgroup(
  read: () => { path: string; hierarchy: Hierarchy } | undefined,
  judge: (path: string, hierarchy: Hierarchy) => CgroupVerdict = judgeCgroupPath,
): CgroupReading {
  const first = read();
  if (first === undefined) return { cgroup: "", cgroupTrusted: false };
  const shape = parseCgroup(first.path);
  // A path that names nothing needs no check: there is nothing to believe.
  if (shape.containerId === undefined && shape.podUid === undefined)
    return { cgroup: first.path, cgroupTrusted: false };
  if (!judge(first.path, first.hierarchy).trusted) return { cgroup: first.path, cgroupTrusted: false };
  const again = read();
  const same = again !== undefined && again.path === first.path && again.hierarchy === first.hierarchy;
  return { cgroup: first.path, cgroupTrusted: same };
}
