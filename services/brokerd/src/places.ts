// brokerd's places on the file system, opened and verified once at start: the workload directory
// (broker.sock, fd.sock: what containers mount), the private directory (admin.sock, handover.sock,
// brokerd.lock), the directories of sockets configured elsewhere, the state directory and the
// journal's directory. Each must pass native/src/dir-rule.ts (ours, nobody else can write it or
// anything on the way to it), and nothing private may lie inside the workload directory, where a
// container that mounts it would reach it. Never relaxes a refusal: an unsafe place stops the
// start (UnsafePlaceError, exit 2) with what to fix.
import { closeSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { entryProblem, openSafeDir, type SafeDir, UnsafePlaceError, within } from "@vfio-broker/native";
import type { Config } from "./config.js";
import { openJournalFile } from "./journal/writer.js";

export interface Places {
  workload: SafeDir;
  private: SafeDir;
  /** The path that binds (or reaches) the configured socket `path` through its verified directory. */
  bindPath(path: string): string;
  /** Closes the directory fds (after every socket and file in them is closed). */
  close(): void;
}

/** The private directory's mode: 0700, or 0710 with the admin group so its members reach admin.sock. */
export function privateDirMode(adminGid: number): number {
  return adminGid >= 0 ? 0o710 : 0o700;
}

export function openPlaces(config: Config): Places {
  const opened: SafeDir[] = [];
  try {
    const workload = openSafeDir(config.workloadDir, { role: "--workload-dir", create: 0o755 });
    opened.push(workload);
    const priv = openSafeDir(config.privateDir, {
      role: "--private-dir",
      create: privateDirMode(config.adminGid),
      mode: privateDirMode(config.adminGid),
      ...(config.adminGid >= 0 ? { gid: config.adminGid } : {}),
    });
    opened.push(priv);
    const outside = (role: string, path: string, real: string) => {
      if (within(real, workload.real))
        throw new UnsafePlaceError(
          `${role} ${path} is inside --workload-dir ${config.workloadDir} (${real}): every workload and ` +
            "container that mounts that directory would reach it. Give it a place outside, e.g. " +
            "--private-dir /run/vfio-brokerd",
        );
    };
    outside("--private-dir", config.privateDir, priv.real);
    const byDir = new Map<string, SafeDir>([
      [resolve(config.workloadDir), workload],
      [resolve(config.privateDir), priv],
    ]);
    const dirOf = (role: string, path: string): SafeDir => {
      const d = resolve(dirname(path));
      let dir = byDir.get(d);
      if (!dir) {
        dir = openSafeDir(d, { role });
        opened.push(dir);
        byDir.set(d, dir);
      }
      return dir;
    };
    const sockets: [string, string][] = [
      ["--socket", config.socket],
      ["--fd-socket", config.fdSocket],
      ["--admin-socket", config.adminSocket],
    ];
    for (const [role, path] of sockets) {
      const dir = dirOf(`${role}'s directory`, path);
      // A stale socket is replaced at bind; anything else there (a planted link) is refused.
      const problem = entryProblem(dir, basename(resolve(path)), "socket");
      if (problem) throw new UnsafePlaceError(`${role} ${path}: ${problem}`);
    }
    outside(
      "--admin-socket",
      config.adminSocket,
      dirOf("--admin-socket's directory", config.adminSocket).real,
    );
    // The state store opens its own directory (state/store.ts); here it is created and placed.
    const state = openSafeDir(config.stateDir, { role: "--state-dir", create: 0o700, mode: 0o700 });
    state.close();
    outside("--state-dir", config.stateDir, state.real);
    if (config.journal !== undefined) {
      const jdir = openSafeDir(dirname(resolve(config.journal)), { role: "--journal's directory" });
      jdir.close();
      outside("--journal", config.journal, jdir.real);
      // The file itself: not a link, ours, not writable by others (created 0600 if absent).
      closeSync(openJournalFile(config.journal));
    }
    return {
      workload,
      private: priv,
      bindPath: (path) => dirOf("a socket's directory", path).at(basename(resolve(path))),
      close() {
        for (const d of opened) d.close();
      },
    };
  } catch (e) {
    for (const d of opened) d.close();
    throw e;
  }
}
