// The CDI spec files the agent owns in the CDI directory (/var/run/cdi by default, which CDI
// consumers such as containerd, CRI-O and podman read): written atomically, mode 0644, removed on
// unprepare. Only files whose names start with this driver's kinds are ever touched here.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { removeFileDurable, writeFileAtomic } from "./atomic-file.js";
import { type CdiSpec, specFileName } from "./cdi-spec.js";

export class CdiStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
  }

  pathOf(kind: string, name: string): string {
    return join(this.dir, specFileName(kind, name));
  }

  write(spec: CdiSpec): void {
    const dev = spec.devices[0];
    if (!dev) throw new Error("a CDI spec without a device");
    writeFileAtomic(this.pathOf(spec.kind, dev.name), `${JSON.stringify(spec, null, 2)}\n`, 0o644);
  }

  /** Removes the spec of device `name` of `kind`; true when there was one. */
  remove(kind: string, name: string): boolean {
    return removeFileDurable(this.pathOf(kind, name));
  }
}
