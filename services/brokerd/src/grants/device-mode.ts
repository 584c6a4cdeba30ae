// AdminService.SetDeviceMode: switching a device's mode (sysfs-wc / vfio) while brokerd runs. It
// is refused while anything holds the device: a device file open on it (its regions and their
// attributes were read in the old mode, and its pending mappings hold backing fds of it) or a
// revoked mapping whose holder has not unmapped yet (its pages are booked, and its fd came from
// the old mode's files). The refusal names them. Then devices/modes.ts moves the device, and the
// change is published ("device.mode": the journal and metrics).
// Never revokes or closes anything (the operator does: CloseDevice, DrainDevice, RevokeSession),
// and never records the mode in the state store: the configuration decides it at the next start.
import type { Core } from "../core/context.js";
import type { DeviceMode } from "../devices/backend.js";
import { type ModeChange, serveInMode } from "../devices/modes.js";
import { formatBytes, hex } from "../devices/regions.js";
import { precondition } from "../errors.js";

/** At most this many holders are named in a refusal; the rest are counted. */
export const MAX_NAMED_HOLDERS = 8;

/** Who holds `deviceId`, one phrase each: sessions with device files open on it, then held revoked mappings. */
export function deviceHolders(core: Core, deviceId: string): string[] {
  const out: string[] = [];
  for (const s of core.sessions.values())
    for (const df of s.deviceFiles.values()) {
      if (df.device.id !== deviceId) continue;
      const maps = [...df.mappings.values()];
      const shown = maps
        .slice(0, 3)
        .map(
          (m) =>
            `${m.region.name}+${hex(m.regionOffset)} ${formatBytes(m.length)} ${m.effectiveAttribute} (${m.state})`,
        );
      out.push(
        `session ${s.id} (uid ${s.identity.uid}, pid ${s.identity.pid}${s.clientName ? `, ${s.clientName}` : ""}) ` +
          `has device file ${df.id} open with ${maps.length} mapping(s)` +
          (shown.length > 0 ? `: ${shown.join(", ")}${maps.length > shown.length ? ", ..." : ""}` : ""),
      );
    }
  for (const h of core.holds.ofDevice(deviceId))
    out.push(
      `pid ${h.pid} (uid ${h.uid}, session ${h.sessionId}) still maps ${h.regionName}+${hex(h.offset)} ` +
        `${formatBytes(h.length)} ${h.attribute}, revoked (${h.reason}) and not yet unmapped`,
    );
  return out;
}

/** Switches `deviceId` to `mode` when nothing holds it; FAILED_PRECONDITION naming what does. */
export function setDeviceMode(core: Core, deviceId: string, mode: DeviceMode, reason: string): ModeChange {
  const d = core.devices.get(deviceId);
  if (d.health === "gone") throw precondition(`${deviceId} is gone; it has no mode to change`, "device_gone");
  const holders = deviceHolders(core, deviceId);
  if (holders.length > 0) {
    const named = holders.slice(0, MAX_NAMED_HOLDERS);
    const more = holders.length - named.length;
    throw precondition(
      `${deviceId} stays in mode ${d.info.mode}: it is in use: ${named.join("; ")}${more > 0 ? `; and ${more} more` : ""}. ` +
        `A mode switch closes and reopens brokerd's files of the device, so nothing may hold it: the clients close ` +
        `their device files, or DrainDevice revokes them (then wait until every holder has unmapped), and switch again`,
      "device_in_use",
    );
  }
  const change = serveInMode(core.devices.backends, deviceId, mode);
  if (change.previous !== change.info.mode)
    core.events.emit("device.mode", deviceId, change.info.mode, change.previous, reason);
  return change;
}
