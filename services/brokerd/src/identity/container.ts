// The container a process runs in, read from its cgroup v2 path. Quotas are charged to the uid and,
// when the process is in a container, to that container too: a user-namespaced container runs
// its processes under many host uids but in one cgroup, so the container key bounds it as a whole.
// Pure: no I/O. Only the shapes container engines really produce are recognised; anything else is
// "not a container" (the uid quota still applies).

export interface ContainerRef {
  /** "docker", "podman", "containerd", "cri-o", or "kubepods" when only the pod is known. */
  runtime: string;
  /** The 64-hex container id (or the pod UID for a pod-level cgroup). */
  id: string;
}

const HEX64 = "[0-9a-f]{64}";
// systemd driver: ".../docker-<id>.scope", ".../libpod-<id>.scope", ".../cri-containerd-<id>.scope",
// ".../crio-<id>.scope"; cgroupfs driver: "/docker/<id>", "/kubepods/.../<id>", "/libpod_parent/libpod-<id>".
const SCOPE = new RegExp(`(docker|libpod|cri-containerd|crio)-(${HEX64})(?:\\.scope)?$`);
const BARE = new RegExp(`/(docker|kubepods[^/]*(?:/[^/]+)*)/(${HEX64})$`);
const RUNTIME: Record<string, string> = {
  docker: "docker",
  libpod: "podman",
  "cri-containerd": "containerd",
  crio: "cri-o",
};

/** The container of a cgroup path, or undefined when the path is not a container's. */
export function containerOf(cgroup: string): ContainerRef | undefined {
  // Ignore a trailing sub-cgroup some runtimes add inside the container (e.g. ".../container").
  const path = cgroup.replace(/\/(container|init\.scope)$/, "");
  const seg = path.slice(path.lastIndexOf("/") + 1);
  const scope = SCOPE.exec(seg);
  if (scope) return { runtime: RUNTIME[scope[1]!] ?? scope[1]!, id: scope[2]! };
  const bare = BARE.exec(path);
  if (bare) return { runtime: bare[1]!.startsWith("docker") ? "docker" : "kubepods", id: bare[2]! };
  return undefined;
}

/** The quota keys an identity is charged to: always its uid, and its container when it has one. */
export function quotaKeys(id: { uid: number; cgroup: string }): string[] {
  const c = containerOf(id.cgroup);
  return c ? [`uid:${id.uid}`, `container:${c.id}`] : [`uid:${id.uid}`];
}
