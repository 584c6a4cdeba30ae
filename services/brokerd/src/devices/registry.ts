// DeviceRegistry: the devices brokerd serves (over all backends), their health (healthy, draining,
// gone) and the page bookings of each (one AttributeMap per device: no page is ever booked with two
// attributes). It answers lookups and keeps those maps; it never revokes, records or publishes:
// the core composes a drain or a device going away from it and from grants/revocation.ts.
import { notFound, quoted } from "../errors.js";
import { AttributeMap } from "../grants/attribute-map.js";
import type { Backend, DeviceHealth, DeviceInfo } from "./backend.js";

export interface ServedDevice {
  info: DeviceInfo;
  backend: Backend;
  health: DeviceHealth;
}

export class DeviceRegistry {
  readonly health = new Map<string, DeviceHealth>();
  private readonly attributeMaps = new Map<string, AttributeMap>();

  constructor(
    readonly backends: Backend[],
    private readonly pageSize: bigint,
  ) {}

  all(): ServedDevice[] {
    const out: ServedDevice[] = [];
    for (const backend of this.backends)
      for (const info of backend.devices())
        out.push({ info, backend, health: this.health.get(info.id) ?? "healthy" });
    return out;
  }

  /** The device by id; NOT_FOUND naming where to look if brokerd does not serve it. */
  get(id: string): ServedDevice {
    const d = this.find(id);
    if (!d)
      throw notFound(`no device ${quoted(id)}; ListDevices shows the devices you may open`, "unknown_device");
    return d;
  }

  /** The device by id, or undefined (the restore, which drops what a gone device held). */
  find(id: string): ServedDevice | undefined {
    for (const backend of this.backends) {
      const info = backend.device(id);
      if (info) return { info, backend, health: this.health.get(id) ?? "healthy" };
    }
    return undefined;
  }

  healthOf(id: string): DeviceHealth {
    return this.health.get(id) ?? "healthy";
  }

  setHealth(id: string, health: DeviceHealth): void {
    this.health.set(id, health);
  }

  /** The page bookings of a device (made on first use). */
  attributeMap(deviceId: string): AttributeMap {
    let m = this.attributeMaps.get(deviceId);
    if (!m) {
      m = new AttributeMap(deviceId, this.pageSize);
      this.attributeMaps.set(deviceId, m);
    }
    return m;
  }

  /** A device went away: its health is forgotten, and its bookings too unless some are still held. */
  forget(id: string, stillHeld: boolean): void {
    this.health.delete(id);
    if (!stillHeld) this.attributeMaps.delete(id);
  }
}
