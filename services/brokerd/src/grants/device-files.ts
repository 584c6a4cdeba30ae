// Opening a device file: a session's handle on one device, with its own maple tree of regions and
// mappings (grants/device-file.ts). The policy must let the identity open the device, the device
// must be healthy, and the identity's deviceFiles quota must allow one more; the device file is
// recorded by the ledger before it is published or returned. A retried OpenDevice (same request
// id) gets the same one. Closing is grants/ending.ts's.
import type { Core } from "../core/context.js";
import { Txn } from "../core/txn.js";
import { unavailable } from "../errors.js";
import type { Session } from "../identity/session.js";
import { authorizeDevice, limitsFor } from "../policy/index.js";
import type { Charges } from "./charges.js";
import { DeviceFile } from "./device-file.js";
import type { Layout } from "./layout.js";

export class DeviceFiles {
  /** Device-file ids continue across runs (the state store keeps the counter). */
  nextId = 1n;

  constructor(
    private readonly core: Core,
    private readonly charges: Charges,
  ) {}

  open(s: Session, deviceId: string, layout: Layout, requestId = ""): DeviceFile {
    const { core } = this;
    core.guard.authorize(s);
    const againId = requestId === "" ? undefined : s.requests.get(requestId)?.deviceFileId;
    const again = againId === undefined ? undefined : s.deviceFiles.get(againId);
    if (again) return again;
    const d = core.devices.get(deviceId);
    core.guard.decide(s, authorizeDevice(core.policy.current, s.identity, deviceId));
    if (d.health !== "healthy")
      throw unavailable(
        `device ${deviceId} is ${d.health}; an operator must undrain it first`,
        `device_${d.health}`,
      );
    const limits = limitsFor(core.policy.current, s.identity, deviceId);
    const df = Txn.run((t) => {
      this.charges.deviceFile(t, s, limits.deviceFiles);
      // An id is never used twice, even one whose record failed.
      const df = new DeviceFile(this.nextId++, s.id, d.info, layout, core.opts.pageSize);
      df.requestId = requestId;
      core.ledger.deviceFileOpened(df);
      return df;
    });
    s.deviceFiles.set(df.id, df);
    core.events.emit("devicefile.open", df);
    s.remember(requestId, { deviceFileId: df.id });
    return df;
  }
}
