// Cgroups a root test makes to place its processes (test/hostile/cgroup-identity.test.ts,
// test/e2e/claims.test.ts): the cgroup v2 mount, and removing a tree it made. Never touches a
// cgroup it was not given.
import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cgroupMounts } from "@vfio-broker/brokerd/identity/cgroup-trust";

/** Where cgroup v2 is mounted here, or undefined on a host without it. */
export const cgroupMount: string | undefined = cgroupMounts(readFileSync("/proc/self/mountinfo", "utf8")).v2
  ?.mountPoint;

/** Removes a cgroup tree deepest first, moving any process still in it to the root cgroup. */
export function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true }))
    if (e.isDirectory()) removeTree(join(dir, e.name));
  for (let i = 0; ; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EBUSY" || i >= 50) throw e;
      for (const pid of readFileSync(join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean))
        try {
          writeFileSync(join(cgroupMount!, "cgroup.procs"), pid);
        } catch {
          /* exited meanwhile */
        }
    }
  }
}
