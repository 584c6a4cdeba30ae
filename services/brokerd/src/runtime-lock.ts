// One brokerd per private dir: an exclusive flock on PRIVATE-DIR/brokerd.lock, taken before any
// socket is touched. A second brokerd started on the same dir refuses to start and leaves the
// first one's sockets alone. flock (not a pid file) because the kernel drops it when the holder
// dies, even by SIGKILL, so a crash never blocks the next start. The file is opened through the
// verified directory's fd and never through a symbolic link (native/src/safe-dir.ts).
import { closeSync, constants, ftruncateSync, readSync, writeSync } from "node:fs";
import { flockExclusive, openInSafeDir, type SafeDir } from "@vfio-broker/native";
import { BrokerError } from "./errors.js";

export interface RuntimeLock {
  path: string;
  release(): void;
}

export function lockRuntimeDir(dir: SafeDir): RuntimeLock {
  const path = dir.show("brokerd.lock");
  const fd = openInSafeDir(dir, "brokerd.lock", constants.O_RDWR | constants.O_CREAT, 0o600);
  if (!flockExclusive(fd)) {
    let holder = "";
    try {
      const buf = Buffer.alloc(32);
      holder = buf
        .subarray(0, readSync(fd, buf, 0, 32, 0))
        .toString()
        .trim();
    } catch {
      /* unreadable: say less */
    }
    closeSync(fd);
    throw new BrokerError(
      "UNAVAILABLE",
      `another brokerd${/^\d+$/.test(holder) ? ` (pid ${holder})` : ""} is serving ${dir.path}; ` +
        "stop it first, or start this one with another --private-dir (and --workload-dir)",
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
