// Peer identity from the kernel: SO_PEERCRED (uid, gid, pid), SO_PEERPIDFD (a pidfd, so a recycled
// pid cannot impersonate), and /proc/<pid>/cgroup (the container). Never from what a client says.
import { readFileSync } from "node:fs";
import { closeFd, peerIdentity, pidfdAlive } from "@vfio-broker/native";
import type { Identity } from "../policy/index.js";

export interface PeerIdentity extends Identity {
  pidfd: number;
  pidfdSource: "SO_PEERPIDFD" | "pidfd_open";
  /** Supplementary groups (from /proc/<pid>/status), for the admin-group check. */
  groups: number[];
}

/** The cgroup v2 path of pid ("" if it cannot be read, e.g. the process already exited). */
export function cgroupOf(pid: number): string {
  try {
    const text = readFileSync(`/proc/${pid}/cgroup`, "utf8");
    const v2 = text.split("\n").find((l) => l.startsWith("0::"));
    return v2 ? v2.slice(3) : "";
  } catch {
    return "";
  }
}

function groupsOf(pid: number): number[] {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((l) => l.startsWith("Groups:"));
    return line ? line.slice(7).trim().split(/\s+/).filter(Boolean).map(Number) : [];
  } catch {
    return [];
  }
}

/**
 * Identity of the peer of a connected Unix socket fd. The /proc reads happen while we hold the
 * pidfd; if the process is gone by then, what we read may belong to a new process with the same
 * pid, so we refuse instead of guessing.
 */
export function identityOfSocket(fd: number): PeerIdentity {
  const p = peerIdentity(fd);
  const cgroup = cgroupOf(p.pid);
  const groups = groupsOf(p.pid);
  if (!pidfdAlive(p.pidfd)) {
    closeFd(p.pidfd);
    throw new Error(`peer pid ${p.pid} exited while connecting`);
  }
  return { uid: p.uid, gid: p.gid, pid: p.pid, cgroup, pidfd: p.pidfd, pidfdSource: p.pidfdSource, groups };
}

export function describeIdentity(id: Identity): string {
  return `uid ${id.uid} gid ${id.gid} pid ${id.pid}${id.cgroup ? ` cgroup ${id.cgroup}` : ""}`;
}
