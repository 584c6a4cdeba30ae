// The rule that decides whether a cgroup path may name a container or a pod (docs/security.md,
// "Container identity"): only when no unprivileged user could have created or named the
// directories the name is read from, nor moved a process into them. Any user with a delegated
// cgroup subtree (every systemd login user has user@N.service; any directory chowned to a user)
// can mkdir "docker-<id>.scope" or "kubepods-...-pod<uid>.slice" in it and move itself in, so the
// shape alone (container.ts) proves nothing.
//
// The rule, for the segments the parse reads (container.ts namedDepth: down to the outermost
// container segment, else the whole path):
//   - none of them is a user@N.service (systemd's delegated user manager), whoever owns it;
//   - the cgroup root and every directory above the last of them is root-controlled: owned by uid 0,
//     not writable by group or others, and so is its cgroup.procs (whoever can write a common
//     ancestor's cgroup.procs can move processes below it); on a cgroup v1 hierarchy, which has no
//     common-ancestor rule, the last one's cgroup.procs and tasks as well.
// Creating or renaming a cgroup needs write access to its parent, and the kernel never moves a
// cgroup to another parent, so a root-controlled chain cannot be changed under the check by anyone
// but root. Directories below the container segment may be delegated (runtimes chown a user-
// namespaced container's cgroup to its root user): nothing is read from them.
// Pure: the filesystem is reached only through the stat function the caller passes
// (cgroup-fs.ts passes lstat); this file never reads /proc or /sys itself.
import { namedDepth } from "./container.js";

/** What the rule needs of a directory or file: its owner and its mode bits. */
export interface CgroupStat {
  uid: number;
  mode: number;
}

/** lstat of a path, or undefined when it does not exist (or cannot be read). */
export type CgroupStatFn = (path: string) => CgroupStat | undefined;

export type Hierarchy = "v2" | "v1-systemd";

/** Where a cgroup hierarchy is mounted in brokerd's mount namespace (from /proc/self/mountinfo). */
export interface CgroupMount {
  hierarchy: Hierarchy;
  /** The mount point, e.g. "/sys/fs/cgroup" or "/sys/fs/cgroup/unified" (hybrid hosts). */
  mountPoint: string;
  /** The cgroup the mount shows as its root, relative to brokerd's cgroup namespace ("/" normally). */
  root: string;
}

export type CgroupVerdict = { trusted: true } | { trusted: false; why: string };

/** A user@N.service: the subtree systemd delegates to user N's manager (and so to user N). */
const USER_MANAGER = /^user@[^/]*\.service$/;
const WRITABLE_BY_OTHERS = 0o022;

/**
 * May `path` (as /proc/<pid>/cgroup gives it, relative to brokerd's cgroup namespace) name a
 * container or pod? `stat` is asked about directories under `mount` only.
 */
export function judgeCgroup(path: string, mount: CgroupMount, stat: CgroupStatFn): CgroupVerdict {
  if (!path.startsWith("/")) return { trusted: false, why: "no cgroup path" };
  const segments = path.split("/").filter((s) => s !== "");
  // ".." segments: the process is outside brokerd's cgroup namespace, where brokerd cannot look.
  if (segments.some((s) => s === "." || s === ".."))
    return { trusted: false, why: "outside brokerd's cgroup namespace" };
  const depth = namedDepth(path);
  const manager = segments.slice(0, depth).find((s) => USER_MANAGER.test(s));
  if (manager !== undefined) return { trusted: false, why: `under ${manager}, a user's delegated subtree` };
  // Root-controlled: the root and every parent of a named segment; on v1 the last named one too.
  const last = mount.hierarchy === "v1-systemd" ? depth : depth - 1;
  const files = mount.hierarchy === "v1-systemd" ? ["cgroup.procs", "tasks"] : ["cgroup.procs"];
  for (let i = 0; i <= last; i++) {
    const dir = `/${segments.slice(0, i).join("/")}`;
    const fsDir = inMount(dir, mount);
    if (fsDir === undefined)
      return { trusted: false, why: `${dir} is not visible in brokerd's cgroup mount` };
    const bad =
      notRootControlled(fsDir, stat) ??
      files.map((f) => notRootControlled(`${fsDir}/${f}`, stat)).find(Boolean);
    if (bad !== undefined) return { trusted: false, why: `${dir}: ${bad}` };
  }
  return { trusted: true };
}

/** Why path is not root-controlled, or undefined when it is. */
function notRootControlled(path: string, stat: CgroupStatFn): string | undefined {
  const st = stat(path);
  const name = path.slice(path.lastIndexOf("/") + 1);
  if (st === undefined) return `${name} cannot be read`;
  if (st.uid !== 0) return `${name} is owned by uid ${st.uid} (delegated)`;
  if ((st.mode & WRITABLE_BY_OTHERS) !== 0) return `${name} is writable by group or others`;
  return undefined;
}

/** The filesystem path of cgroup `dir` under `mount`, or undefined when the mount does not show it. */
export function inMount(dir: string, mount: CgroupMount): string | undefined {
  const base = mount.mountPoint.replace(/\/+$/, "");
  if (mount.root === "/") return dir === "/" ? base || "/" : `${base}${dir}`;
  if (dir === mount.root) return base || "/";
  if (dir.startsWith(`${mount.root}/`)) return `${base}${dir.slice(mount.root.length)}`;
  return undefined;
}

/** Undoes mountinfo's octal escapes (\040 for a space, \011, \012, \134). */
export function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/**
 * The cgroup v2 mount and the cgroup v1 name=systemd mount in /proc/self/mountinfo text: on a
 * unified host /sys/fs/cgroup is cgroup2; on a hybrid one cgroup2 is at /sys/fs/cgroup/unified
 * beside the v1 controllers. When a hierarchy is mounted more than once, the first mount that
 * shows its whole tree (root "/") is taken, else the first. Pure.
 */
export function cgroupMounts(mountinfo: string): Partial<Record<Hierarchy, CgroupMount>> {
  const found: Record<Hierarchy, CgroupMount[]> = { v2: [], "v1-systemd": [] };
  for (const line of mountinfo.split("\n")) {
    const dash = line.indexOf(" - ");
    if (dash < 0) continue;
    const pre = line.slice(0, dash).split(" ");
    const post = line.slice(dash + 3).split(" ");
    const root = pre[3];
    const mountPoint = pre[4];
    if (root === undefined || mountPoint === undefined) continue;
    const fstype = post[0];
    const options = post[2] ?? "";
    const hierarchy: Hierarchy | undefined =
      fstype === "cgroup2"
        ? "v2"
        : fstype === "cgroup" && options.split(",").includes("name=systemd")
          ? "v1-systemd"
          : undefined;
    if (hierarchy !== undefined)
      found[hierarchy].push({
        hierarchy,
        mountPoint: unescapeMountinfo(mountPoint),
        root: unescapeMountinfo(root),
      });
  }
  const out: Partial<Record<Hierarchy, CgroupMount>> = {};
  for (const h of ["v2", "v1-systemd"] as const) {
    const m = found[h].find((x) => x.root === "/") ?? found[h][0];
    if (m) out[h] = m;
  }
  return out;
}
