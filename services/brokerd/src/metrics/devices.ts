// Devices as Prometheus series: the DeviceFiles and MapleTrees open on each (read at scrape time,
// so they cannot drift), each device's health and mode now and their transitions, DeviceFiles
// opened. Only reads; the device label is a configured device id, the state label one of
// HEALTH_STATES, the mode label one of DEVICE_MODES.
import { Counter, Gauge, type Registry } from "prom-client";
import type { Broker } from "../broker.js";
import { DEVICE_MODES } from "../devices/backend.js";
import { bounded, HEALTH_STATES } from "./labels.js";
import { perDevice } from "./per-device.js";
import { P, subscribe } from "./series.js";

/** Registers the series; returns the detach that unsubscribes from the broker. */
export function registerDeviceMetrics(registry: Registry, broker: Broker): () => void {
  const registers = [registry];
  new Gauge({
    name: `${P}device_files_open`,
    help: "DeviceFiles (clients' open views of a device) open now, by device.",
    labelNames: ["device"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice(broker)) this.set({ device }, d.files);
    },
  });
  new Gauge({
    name: `${P}maple_tree_entries`,
    help: "MapleTree entries (region compat ranges and mapping aliases), summed over the device's DeviceFiles.",
    labelNames: ["device"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice(broker)) this.set({ device }, d.entries);
    },
  });
  new Gauge({
    name: `${P}maple_tree_max_depth`,
    help: "Deepest MapleTree (levels of nodes) among the device's DeviceFiles; 0 when none is open.",
    labelNames: ["device"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice(broker)) this.set({ device }, d.depth);
    },
  });
  new Gauge({
    name: `${P}device_health`,
    help: "1 for the device's current health state, 0 for the others.",
    labelNames: ["device", "state"],
    registers,
    collect() {
      this.reset();
      for (const d of broker.allDevices()) {
        const now = broker.healthOf(d.info.id);
        for (const state of HEALTH_STATES) this.set({ device: d.info.id, state }, now === state ? 1 : 0);
      }
    },
  });
  new Gauge({
    name: `${P}device_mode`,
    help: "1 for the mode the device is served in now (sysfs-wc: never opened through VFIO; vfio), 0 for the other.",
    labelNames: ["device", "mode"],
    registers,
    collect() {
      this.reset();
      for (const d of broker.allDevices())
        for (const mode of DEVICE_MODES) this.set({ device: d.info.id, mode }, d.info.mode === mode ? 1 : 0);
    },
  });
  const modeChanges = new Counter({
    name: `${P}device_mode_changes_total`,
    help: "Mode switches (AdminService.SetDeviceMode), by device and new mode.",
    labelNames: ["device", "mode"],
    registers,
  });
  const deviceFilesOpened = new Counter({
    name: `${P}device_files_opened_total`,
    help: "DeviceFiles opened, by device.",
    labelNames: ["device"],
    registers,
  });
  const healthChanges = new Counter({
    name: `${P}device_health_changes_total`,
    help: "Device health transitions, by device and new state.",
    labelNames: ["device", "state"],
    registers,
  });
  return subscribe(broker, {
    "devicefile.open": (df) => deviceFilesOpened.inc({ device: df.device.id }),
    "device.health": (device, health) => healthChanges.inc({ device, state: bounded(HEALTH_STATES, health) }),
    "device.mode": (device, mode) => modeChanges.inc({ device, mode: bounded(DEVICE_MODES, mode) }),
  });
}
