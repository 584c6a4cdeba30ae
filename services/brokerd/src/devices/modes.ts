// Moving a served device from one mode to the other (DeviceMode, backend.ts) across the backends:
// the sim backend relabels its own device (setMode); a PCI function leaves the backend of its old
// mode (detach: brokerd's fds for it closed) and joins the backend of the new one (attach: opened
// and probed afresh). If the new mode cannot take it, it goes back to the old one.
// Never checks who holds the device (grants/device-mode.ts refuses before calling this) and never
// touches a function no backend serves.
import { notFound, precondition } from "../errors.js";
import type { Backend, DeviceInfo, DeviceMode } from "./backend.js";

export interface ModeChange {
  info: DeviceInfo;
  previous: DeviceMode;
}

/** Serves `id` in mode `to` from now on (a no-op when it is in that mode already). */
export function serveInMode(backends: readonly Backend[], id: string, to: DeviceMode): ModeChange {
  const from = backends.find((b) => b.device(id) !== undefined);
  const cur = from?.device(id);
  if (!from || !cur)
    throw notFound(`no device "${id}"; ListAllDevices shows the devices brokerd serves`, "unknown_device");
  const previous = cur.mode;
  if (previous === to) return { info: cur, previous };
  if (from.setMode) return { info: from.setMode(id, to), previous };
  const target = backends.find((b) => b.mode === to && b.attach);
  if (!target || !from.detach || !from.attach)
    throw precondition(
      `${id} cannot change mode: no backend of this brokerd serves mode ${to}`,
      "mode_unavailable",
    );
  from.detach(id);
  try {
    return { info: target.attach!(id), previous };
  } catch (e) {
    const why = (e as Error).message;
    try {
      from.attach(id);
    } catch (again) {
      throw precondition(
        `${id} could not be served in mode ${to} (${why}), nor again in mode ${previous} (${(again as Error).message}): ` +
          `brokerd no longer serves it; fix the cause and restart brokerd`,
        "mode_switch_failed",
      );
    }
    throw precondition(
      `${id} cannot be served in mode ${to}: ${why}; it stays in mode ${previous}`,
      "mode_switch_failed",
    );
  }
}
