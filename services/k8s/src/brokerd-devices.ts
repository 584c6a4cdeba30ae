// Reads the devices brokerd serves on this node (AdminService.ListAllDevices on brokerd's admin
// socket), for the ResourceSlice, the DRA plugin's device map and the device plugin's list.
// Owns that one call; never changes anything in brokerd.
import type { Device } from "@vfio-broker/proto";
import { AdminService, createClient } from "@vfio-broker/proto";

/** Devices this node publishes at most (one ResourceSlice holds at most 128 devices). */
export const MAX_DEVICES = 128;

export async function listBrokerdDevices(adminSocket: string): Promise<Device[]> {
  const admin = createClient(AdminService, `unix:${adminSocket}`);
  try {
    const res = await admin.listAllDevices({}, { timeoutMs: 10_000 });
    if (res.devices.length > MAX_DEVICES) {
      throw new Error(
        `brokerd serves ${res.devices.length} devices; one ResourceSlice holds at most ${MAX_DEVICES}`,
      );
    }
    return res.devices;
  } finally {
    admin.close();
  }
}
