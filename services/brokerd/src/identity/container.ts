// The container a process runs in, read from its cgroup v2 path: the container id and runtime and,
// for Kubernetes paths, the pod UID and QoS class. Quotas are charged to the uid and, when the
// process is in a container, to that container too: a user-namespaced container runs its
// processes under many host uids but in one cgroup, so the container key bounds it as a whole.
// Pure: no I/O. Only the shapes container engines really produce are recognised; anything else is
// "not a container" (the uid quota still applies).
//
// Shapes (systemd cgroup driver, then cgroupfs):
//   docker      /system.slice/docker-<id>.scope                 /docker/<id>
//   podman      /machine.slice/libpod-<id>.scope, rootless       /libpod_parent/libpod-<id>
//               /user.slice/user-N.slice/user@N.service/user.slice/libpod-<id>.scope[/container]
//   containerd  .../cri-containerd-<id>.scope                    /kubepods/<qos>/pod<uid>/<id>
//   CRI-O       .../crio-<id>.scope                              /kubepods/<qos>/pod<uid>/crio-<id>
//   Kubernetes  /kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/...
//               /kubepods/<qos>/pod<uid>/...; Guaranteed pods sit right under kubepods(.slice):
//               /kubepods.slice/kubepods-pod<uid>.slice/..., /kubepods/pod<uid>/...
//   monitors    crio-conmon-<id>.scope, libpod-conmon-<id>.scope: the engine's monitor process
//               (conmon), not the container: no container id (the pod, if any, is still known).
//
// The path is read from the root down and the OUTERMOST container segment wins; whatever lies
// below it (".../container", "init.scope", or cgroups a process with a delegated cgroup namespace
// made itself) is a sub-cgroup of that container. A container may name its own sub-cgroups
// anything, "docker-<another id>.scope" included, so the innermost segment is not to be trusted.
// Likewise pod and QoS are only read above the container segment.
//
// A path is only believed when cgroup-trust.ts says no unprivileged user could have created or
// named the segments it is read from (a user with a delegated subtree can mkdir any of these
// names): cgroupIdentityOf, containerOf and quotaKeys take the identity's cgroupTrusted verdict
// and say nothing for an untrusted path. parseCgroup alone is the shape, never the identity.

export type QosClass = "guaranteed" | "burstable" | "besteffort";

export interface ContainerRef {
  /** "docker", "podman", "containerd", "cri-o", or "kubepods" when only the pod is known. */
  runtime: string;
  /** The 64-hex container id. */
  id: string;
  /** The Kubernetes pod UID (with dashes, as the API server writes it), when under kubepods. */
  podUid?: string;
  qosClass?: QosClass;
}

/** What a cgroup path says about its process; every field is absent when the path does not say. */
export interface CgroupIdentity {
  containerId?: string;
  /** "docker", "podman", "containerd", "cri-o"; "kubepods" for a bare id under a pod (cgroupfs). */
  containerRuntime?: string;
  podUid?: string;
  qosClass?: QosClass;
}

const HEX64 = "[0-9a-f]{64}";
// A pod UID: a UUID (API-server pods), or 32 hex digits (static and mirror pods: a hash). The
// systemd driver writes "_" for "-" because "-" separates slice levels.
const POD_UID = "[0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12}|[0-9a-f]{32}";
const SCOPE = new RegExp(`^(docker|libpod|cri-containerd|crio)-(${HEX64})(?:\\.scope)?$`);
const CONMON = new RegExp(`^(?:libpod|crio)-conmon-${HEX64}(?:\\.scope)?$`);
const BARE = new RegExp(`^${HEX64}$`);
const KUBEPODS = /^kubepods(?:\.slice)?$/;
const QOS_CGROUPFS = /^(besteffort|burstable)$/;
const QOS_SYSTEMD = /^kubepods-(besteffort|burstable)\.slice$/;
const POD_CGROUPFS = new RegExp(`^pod(${POD_UID})$`);
const POD_SYSTEMD = new RegExp(`^kubepods(?:-(besteffort|burstable))?-pod(${POD_UID})\\.slice$`);
const RUNTIME: Record<string, string> = {
  docker: "docker",
  libpod: "podman",
  "cri-containerd": "containerd",
  crio: "cri-o",
};

/** Everything the cgroup path's shape says: container id and runtime, pod UID and QoS class. */
export function parseCgroup(cgroup: string): CgroupIdentity {
  return scanCgroup(cgroup).identity;
}

/**
 * How many segments of the path, from the root, the parse reads: up to and including the outermost
 * container segment (or the conmon or bare-hex segment that ends the parse), else all of them.
 * Below that depth nothing can change what the path names; cgroup-trust.ts checks down to it.
 */
export function namedDepth(cgroup: string): number {
  return scanCgroup(cgroup).depth;
}

function scanCgroup(cgroup: string): { identity: CgroupIdentity; depth: number } {
  const out: CgroupIdentity = {};
  const segments = cgroup.split("/").filter((s) => s !== "");
  let kube = false; // inside kubepods(.slice), pod not yet seen
  let qos: QosClass | undefined;
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    const scope = SCOPE.exec(seg);
    if (scope) {
      out.containerId = scope[2]!;
      out.containerRuntime = RUNTIME[scope[1]!]!;
      return { identity: out, depth: i + 1 };
    }
    if (CONMON.test(seg)) return { identity: out, depth: i + 1 };
    if (BARE.test(seg)) {
      // cgroupfs: "/docker/<id>", or "<id>" right under a pod. Anywhere else a bare hex name is
      // not a shape any engine makes, so it is no container.
      if (segments[i - 1] === "docker") out.containerRuntime = "docker";
      else if (out.podUid !== undefined && POD_CGROUPFS.test(segments[i - 1] ?? ""))
        out.containerRuntime = "kubepods";
      else return { identity: out, depth: i + 1 };
      out.containerId = seg;
      return { identity: out, depth: i + 1 };
    }
    if (out.podUid !== undefined) continue; // pod-level sub-cgroups (e.g. the pod's own slices)
    if (KUBEPODS.test(seg)) {
      kube = true;
      continue;
    }
    if (!kube) continue;
    const q = QOS_CGROUPFS.exec(seg) ?? QOS_SYSTEMD.exec(seg);
    if (q && qos === undefined) {
      qos = q[1] as QosClass;
      continue;
    }
    const cgroupfsPod = POD_CGROUPFS.exec(seg);
    const systemdPod = cgroupfsPod ? undefined : POD_SYSTEMD.exec(seg);
    if (cgroupfsPod || systemdPod) {
      const podQos = systemdPod?.[1] as QosClass | undefined;
      // The systemd driver repeats the QoS class in the pod slice's name; a mismatch is no shape
      // the kubelet makes.
      if (podQos !== undefined && qos !== undefined && podQos !== qos) {
        kube = false;
        continue;
      }
      out.podUid = (cgroupfsPod?.[1] ?? systemdPod![2]!).replaceAll("_", "-");
      out.qosClass = qos ?? podQos ?? "guaranteed";
      continue;
    }
    kube = false; // anything else under kubepods is not a pod path
  }
  return { identity: out, depth: segments.length };
}

/** The part of an identity this file reads: its cgroup path and cgroup-trust.ts's verdict on it. */
export interface CgroupOf {
  cgroup: string;
  /** true only when cgroup-trust.ts found that no unprivileged user could have named the path. */
  cgroupTrusted: boolean;
}

/** What an identity's cgroup says about it: parseCgroup of a trusted path, nothing otherwise. */
export function cgroupIdentityOf(id: CgroupOf): CgroupIdentity {
  return id.cgroupTrusted ? parseCgroup(id.cgroup) : {};
}

/** The container of an identity, or undefined when its (trusted) path is not a container's. */
export function containerOf(id: CgroupOf): ContainerRef | undefined {
  const p = cgroupIdentityOf(id);
  if (p.containerId === undefined) return undefined;
  const ref: ContainerRef = { runtime: p.containerRuntime!, id: p.containerId };
  if (p.podUid !== undefined) {
    ref.podUid = p.podUid;
    ref.qosClass = p.qosClass!;
  }
  return ref;
}

/** The keys of identities with no container, by uid, shared (each session and connection held a copy). */
const uidKeys = new Map<number, readonly string[]>();
const MAX_REMEMBERED_UIDS = 4096;

/**
 * The quota keys an identity is charged to: always its uid, and its (trusted) container when it has
 * one. The array is shared between callers: never change it.
 */
export function quotaKeys(id: CgroupOf & { uid: number }): readonly string[] {
  const c = containerOf(id);
  if (c) return [`uid:${id.uid}`, `container:${c.id}`];
  let keys = uidKeys.get(id.uid);
  if (!keys) {
    if (uidKeys.size >= MAX_REMEMBERED_UIDS) uidKeys.clear();
    keys = Object.freeze([`uid:${id.uid}`]);
    uidKeys.set(id.uid, keys);
  }
  return keys;
}
