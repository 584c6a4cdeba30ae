// The filesystem side of cgroup-trust.ts: finds brokerd's cgroup mounts (once, from
// /proc/self/mountinfo), lstats the directories the rule asks about, and reads a client's cgroup
// around the check so that a process that moved meanwhile is not believed. When brokerd has a
// cgroup namespace of its own and a mount of the host's tree, it finds its namespace root in that
// mount (once) and reads every path there (cgroup-ns.ts). Reads only; never writes to the cgroup
// tree, never decides the rule itself (cgroup-trust.ts does).
import { lstatSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { logLimited } from "../log.js";
import { inHostTerms, levelsAbove } from "./cgroup-ns.js";
import {
  type CgroupMount,
  type CgroupStat,
  type CgroupVerdict,
  cgroupMounts,
  type Hierarchy,
  judgeCgroup,
  unescapeMountinfo,
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

/** brokerd's namespace root in a mount of the host's cgroup v2 tree, read there as root "/". */
export interface HostView {
  mount: CgroupMount;
  nsRoot: string;
}
let hostView: HostView | null | undefined;
/** Directories the search for brokerd's own cgroup reads at most (once, at the first client). */
const MAX_SEARCH = 65_536;

/**
 * Where brokerd's cgroup namespace root sits in a cgroup2 mount that shows the tree above it
 * (undefined when brokerd has no namespace of its own, or no such mount): the directory at the
 * mount's depth below whose own sub-path (/proc/self/cgroup) has brokerd's pid in cgroup.procs.
 * The kernel lists a process in one cgroup only, so no one else can be found there. Searched
 * once, through root-controlled directories only, at most MAX_SEARCH of them (past that brokerd
 * gives up: every client outside its namespace is then its plain uid, and stderr says why).
 */
export function brokerdHostView(): HostView | undefined {
  if (hostView === undefined) {
    try {
      hostView =
        findHostView(
          readFileSync("/proc/self/mountinfo", "utf8"),
          readFileSync("/proc/self/cgroup", "utf8"),
        ) ?? null;
    } catch {
      hostView = null;
    }
  }
  return hostView ?? undefined;
}

function findHostView(mountinfo: string, selfCgroup: string): HostView | undefined {
  const own = /^0::(\/.*)$/m.exec(selfCgroup)?.[1];
  if (own === undefined || own.startsWith("/..")) return undefined;
  const ownSegs = own.split("/").filter(Boolean);
  for (const line of mountinfo.split("\n")) {
    const dash = line.indexOf(" - ");
    if (dash < 0 || line.slice(dash + 3).split(" ")[0] !== "cgroup2") continue;
    const pre = line.slice(0, dash).split(" ");
    const levels = levelsAbove(unescapeMountinfo(pre[3] ?? ""));
    if (levels === undefined || pre[4] === undefined) continue;
    const mountPoint = unescapeMountinfo(pre[4]);
    const nsRoot = searchOwn(mountPoint, levels, ownSegs);
    if (nsRoot !== undefined) return { mount: { hierarchy: "v2", mountPoint, root: "/" }, nsRoot };
  }
  return undefined;
}

/** The directory `levels` below mountPoint whose ownSegs sub-cgroup lists this process, as a cgroup path. */
function searchOwn(mountPoint: string, levels: number, ownSegs: string[]): string | undefined {
  let frontier = [""];
  let read = 0;
  for (let depth = 0; depth < levels; depth++) {
    const next: string[] = [];
    for (const rel of frontier) {
      if (++read > MAX_SEARCH) return undefined;
      try {
        for (const e of readdirSync(join(mountPoint, rel), { withFileTypes: true })) {
          // Only root-controlled directories: brokerd's own chain is, and a user's delegated
          // subtree (however many cgroups it makes) is never read.
          const st = e.isDirectory() ? lstatCgroup(join(mountPoint, rel, e.name)) : undefined;
          if (st && st.uid === 0 && (st.mode & 0o022) === 0) next.push(`${rel}/${e.name}`);
        }
      } catch {
        /* gone meanwhile */
      }
    }
    frontier = next;
  }
  const me = String(process.pid);
  return frontier.find((rel) => {
    try {
      const procs = readFileSync(join(mountPoint, rel, ...ownSegs, "cgroup.procs"), "utf8");
      return procs.split("\n").includes(me);
    } catch {
      return false;
    }
  });
}

/** A v2 path as /proc gave it, in the host view's terms when brokerd has one; v1 paths as they are. */
function inView(ref: {
  path: string;
  hierarchy: Hierarchy;
}): { path: string; hierarchy: Hierarchy } | undefined {
  const view = ref.hierarchy === "v2" ? brokerdHostView() : undefined;
  if (view === undefined) {
    if (ref.path.startsWith("/.."))
      logLimited(
        "cgroup.outside-namespace",
        "vfio-brokerd: a client's cgroup lies outside brokerd's cgroup namespace and no mount of the host's cgroup tree shows it: its container and pod cannot be read (mount the host's /sys/fs/cgroup, docs/kubernetes.md)",
      );
    return ref;
  }
  const path = inHostTerms(ref.path, view.nsRoot);
  return path === undefined ? undefined : { path, hierarchy: "v2" };
}

/** The rule on the real filesystem, for a path of the given hierarchy. */
export function judgeCgroupPath(path: string, hierarchy: Hierarchy): CgroupVerdict {
  const view = hierarchy === "v2" ? brokerdHostView() : undefined;
  const mount = view?.mount ?? brokerdCgroupMounts()[hierarchy];
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
  const raw = read();
  if (raw === undefined) return { cgroup: "", cgroupTrusted: false };
  const first = inView(raw);
  // A path the host view does not show: as the kernel wrote it, naming nothing.
  if (first === undefined) return { cgroup: raw.path, cgroupTrusted: false };
  const shape = parseCgroup(first.path);
  // A path that names nothing needs no check: there is nothing to believe.
  if (shape.containerId === undefined && shape.podUid === undefined)
    return { cgroup: first.path, cgroupTrusted: false };
  if (!judge(first.path, first.hierarchy).trusted) return { cgroup: first.path, cgroupTrusted: false };
  const reread = read();
  const again = reread === undefined ? undefined : inView(reread);
  const same = again !== undefined && again.path === first.path && again.hierarchy === first.hierarchy;
  return { cgroup: first.path, cgroupTrusted: same };
}
