// One brokerd per runtime dir: an exclusive flock on DIR/brokerd.lock, taken before any socket in
// DIR is touched. A second brokerd started on the same dir refuses to start and leaves the first
// one's sockets alone. flock (not a pid file) because the kernel drops it when the holder dies,
// even by SIGKILL, so a crash never blocks the next start.
import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { flockExclusive } from "@vfio-broker/native";
import { BrokerError } from "./errors.js";

export interface RuntimeLock {
  path: string;
  release(): void;
}

export function lockRuntimeDir(dir: string): RuntimeLock {
  const path = join(dir, "brokerd.lock");
  // O_NOFOLLOW: a planted symlink must not make root open (and truncate) another file.
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o644);
  if (!flockExclusive(fd)) {
    closeSync(fd);
    let holder = "";
    try {
      holder = readFileSync(path, "utf8").trim();
    } catch {
      /* unreadable: say less */
    }
    throw new BrokerError(
      "UNAVAILABLE",
      `another brokerd${/^\d+$/.test(holder) ? ` (pid ${holder})` : ""} is serving ${dir}; ` +
        "stop it first, or start this one with another --runtime-dir",
      "already_running",
    );
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  let held = true;
  return {
    path,
    release() {
      if (!held) return;
      held = false;
      closeSync(fd);
    },
  };
}
