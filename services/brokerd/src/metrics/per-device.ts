// What is open and mapped on each device now, tallied from broker.sessions at scrape time for the
// per-device gauges (metrics/devices.ts, metrics/mappings.ts). Pure reading of broker state: no
// I/O, no series, never changes anything.
import type { Broker } from "../broker.js";

export interface DeviceTally {
  /** DeviceFiles open on the device. */
  files: number;
  /** MapleTree entries summed over those DeviceFiles. */
  entries: number;
  /** The deepest of their MapleTrees. */
  depth: number;
  /** Bytes mapped by their live mappings. */
  bytes: bigint;
  /** Live mappings by `${region}\u0000${effective attribute}`. */
  mappings: Map<string, number>;
}

const empty = (): DeviceTally => ({ files: 0, entries: 0, depth: 0, bytes: 0n, mappings: new Map() });

/** Every configured device (zeros when nothing is open on it), plus any other a DeviceFile is open on. */
export function perDevice(broker: Broker): Map<string, DeviceTally> {
  const devices = new Map<string, DeviceTally>();
  for (const d of broker.allDevices()) devices.set(d.info.id, empty());
  for (const s of broker.sessions.values())
    for (const df of s.deviceFiles.values()) {
      let d = devices.get(df.device.id);
      if (!d) {
        d = empty();
        devices.set(df.device.id, d);
      }
      d.files++;
      d.entries += df.entryCount;
      d.depth = Math.max(d.depth, df.treeDepth);
      for (const m of df.mappings.values()) {
        const key = `${m.region.name}\u0000${m.effectiveAttribute}`;
        d.mappings.set(key, (d.mappings.get(key) ?? 0) + 1);
        d.bytes += m.length;
      }
    }
  return devices;
}
