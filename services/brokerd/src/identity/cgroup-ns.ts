// brokerd in a cgroup namespace of its own (a container on a cgroup v2 node: containerd and CRI-O
// give every unprivileged container one): the kernel then writes every process's cgroup path
// relative to brokerd's namespace root, "/../../kubepods-besteffort.slice/..." for a process
// outside it, with the names above the common ancestor left out, so neither the pod nor the chain
// of parents can be read from it. Given a mount of the host's cgroup tree (a cgroup2 mount whose
// root mountinfo shows above brokerd's namespace, "/../.."), and where brokerd's namespace root
// sits in that mount (cgroup-fs.ts finds it: the directory whose cgroup.procs lists brokerd's own
// pid), a path can be put back into the mount's terms and judged there like any other.
// Pure: no I/O; never decides trust (cgroup-trust.ts does, on the path this returns).

/** How many levels above brokerd's namespace root a mount's root is ("/../.." -> 2), if it is only that. */
export function levelsAbove(mountRoot: string): number | undefined {
  const m = /^((?:\/\.\.)+)\/?$/.exec(mountRoot);
  return m ? m[1]!.length / 3 : undefined;
}

/**
 * A path relative to brokerd's cgroup namespace, in the terms of a mount whose root is the
 * namespace root's ancestor: nsRoot is the namespace root's path in that mount. undefined when the
 * path climbs above the mount's root (the mount does not show it) or is not absolute.
 */
export function inHostTerms(path: string, nsRoot: string): string | undefined {
  if (!path.startsWith("/") || !nsRoot.startsWith("/")) return undefined;
  const out = nsRoot.split("/").filter((s) => s !== "");
  for (const seg of path.split("/")) {
    if (seg === "") continue;
    if (seg === ".") return undefined; // never the kernel's
    if (seg === "..") {
      if (out.length === 0) return undefined;
      out.pop();
    } else out.push(seg);
  }
  return `/${out.join("/")}`;
}
