// Peer identity from the kernel: SO_PEERCRED (uid, gid, pid), SO_PEERPIDFD (a pidfd, so a recycled
// pid cannot impersonate), and /proc/<pid>/cgroup (the container, when cgroup-trust.ts believes
// the path); and a process found again later by pid + start time (openIfSameProcess). Never from
// what a client says.
import { readFileSync } from "node:fs";
import { closeFd, peerIdentity, pidfdAlive, pidfdOpen } from "@vfio-broker/native";
import type { Identity } from "../policy/index.js";
import { type CgroupReading, readVerifiedCgroup } from "./cgroup-fs.js";
import type { Hierarchy } from "./cgroup-trust.js";

/**
 * readFileSync's options as one shared object: given the string "utf8", Node 20 copies its defaults
 * with a spread and adds `encoding`, which makes a new hidden class on every call (~170 B of old
 * space each, read four times per connecting workload).
 */
export const UTF8 = { encoding: "utf8" } as const;

export interface PeerIdentity extends Identity {
  pidfd: number;
  pidfdSource: "SO_PEERPIDFD" | "pidfd_open";
  /** Supplementary groups (from /proc/<pid>/status), for the admin-group check. */
  groups: number[];
  /**
   * The process's start time (/proc/<pid>/stat field 22, clock ticks since boot; "" if unread):
   * with the pid it names one process across pid reuse, so a restarted brokerd (which has no
   * pidfd from before) can tell whether a recorded session's process still lives.
   */
  startTime: string;
}

/** Field 22 (starttime) of /proc/<pid>/stat text. Pure. The command name may hold spaces and ')'. */
export function startTimeFromStat(text: string): string {
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // After "pid (comm) ", fields[0] is field 3 (state): starttime, field 22, is fields[19].
  const v = fields[19];
  return v !== undefined && /^\d+$/.test(v) ? v : "";
}

/** pid's start time, "" when it cannot be read (the process is gone). */
export function processStartTime(pid: number): string {
  try {
    return startTimeFromStat(readFileSync(`/proc/${pid}/stat`, UTF8));
  } catch {
    return "";
  }
}

/**
 * The cgroup path in the text of /proc/<pid>/cgroup: the v2 ("0::") path. On a cgroup v1 host
 * (no unified hierarchy mounted) that line says "/" for every process, so there the path of the
 * name=systemd hierarchy is used instead: engines place a container there under the same name
 * (docker-<id>.scope, /docker/<id>, /kubepods/...) as in v2. Pure.
 */
export function cgroupFromProcText(text: string): string {
  return cgroupRefFromProcText(text)?.path ?? "";
}

/** cgroupFromProcText's path and the hierarchy it came from (where cgroup-trust.ts must look). */
export function cgroupRefFromProcText(text: string): { path: string; hierarchy: Hierarchy } | undefined {
  const lines = text.split("\n");
  // The kernel refuses "\n" in cgroup names, so the file has one line per hierarchy; text with
  // two 0:: or two name=systemd lines is not the kernel's and names no cgroup.
  if (lines.filter((l) => l.startsWith("0::")).length > 1) return undefined;
  if (lines.filter((l) => /^\d+:name=systemd:/.test(l)).length > 1) return undefined;
  const v2 = lines.find((l) => l.startsWith("0::"))?.slice(3);
  if (v2 !== undefined && v2 !== "/") return { path: v2, hierarchy: "v2" };
  const v1 = lines.find((l) => /^\d+:name=systemd:/.test(l));
  if (v1 !== undefined) {
    const path = v1.slice(v1.indexOf(":name=systemd:") + ":name=systemd:".length);
    if (path !== "" && path !== "/") return { path, hierarchy: "v1-systemd" };
  }
  return v2 === undefined ? undefined : { path: v2, hierarchy: "v2" };
}

function readProcCgroup(pid: number): { path: string; hierarchy: Hierarchy } | undefined {
  try {
    return cgroupRefFromProcText(readFileSync(`/proc/${pid}/cgroup`, UTF8));
  } catch {
    return undefined;
  }
}

/**
 * The cgroup path of pid ("" if it cannot be read, e.g. the process already exited) and whether
 * it may name a container or pod (cgroup-trust.ts; read again after the check, cgroup-fs.ts).
 */
export function cgroupOf(pid: number): CgroupReading {
  return readVerifiedCgroup(() => readProcCgroup(pid));
}

/**
 * After a restart (state/restore.ts): may the recorded path still name a container? Judged again on
 * where the (still living) process is now; a process that moved is not believed.
 */
export function cgroupTrustedNow(pid: number, recorded: string): boolean {
  const now = cgroupOf(pid);
  return now.cgroupTrusted && now.cgroup === recorded;
}

function groupsOf(pid: number): number[] {
  try {
    const line = readFileSync(`/proc/${pid}/status`, UTF8)
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
  const { cgroup, cgroupTrusted } = cgroupOf(p.pid);
  const groups = groupsOf(p.pid);
  const startTime = processStartTime(p.pid);
  if (!pidfdAlive(p.pidfd)) {
    closeFd(p.pidfd);
    throw new Error(`peer pid ${p.pid} exited while connecting`);
  }
  return {
    uid: p.uid,
    gid: p.gid,
    pid: p.pid,
    cgroup,
    cgroupTrusted,
    pidfd: p.pidfd,
    pidfdSource: p.pidfdSource,
    groups,
    startTime,
  };
}

export function describeIdentity(id: Identity): string {
  return `uid ${id.uid} gid ${id.gid} pid ${id.pid}${id.cgroup ? ` cgroup ${id.cgroup}` : ""}`;
}

/** A pidfd on pid if it is still the process that started at startTime; else why not. */
export function openIfSameProcess(pid: number, startTime: string): { pidfd: number } | { why: string } {
  if (startTime === "") return { why: "no start time was recorded" };
  let pidfd: number;
  try {
    pidfd = pidfdOpen(pid);
  } catch {
    return { why: `pid ${pid} has exited` };
  }
  // Read after the pidfd is open: if the start time still matches, the pidfd is that process.
  const now = processStartTime(pid);
  if (now !== startTime || !pidfdAlive(pidfd)) {
    closeFd(pidfd);
    return { why: now === "" ? `pid ${pid} has exited` : `pid ${pid} is now another process (start ${now})` };
  }
  return { pidfd };
}
