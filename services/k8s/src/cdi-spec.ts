// The CDI spec documents the agent writes: one per prepared claim (kind vfio-broker.io/claim,
// device named by the claim UID) and one per device for the device plugin (kind
// vfio-broker.io/device). Each injects only the workload socket directory, read-only, and the
// environment a client needs. Pure: builds documents and names; never touches a file.
import { CLAIM_CDI_KIND, CONTAINER_SOCKET, CONTAINER_SOCKET_DIR, DEVICE_CDI_KIND } from "./names.js";

/**
 * The CDI spec version written. 0.5.0 carries env and mounts (all a spec here uses), and it is the
 * newest that podman 4.3's CDI library reads (deploy/cdi/vfio-broker.json says the same).
 */
export const CDI_VERSION = "0.5.0";

export interface CdiMount {
  hostPath: string;
  containerPath: string;
  type: "bind";
  options: string[];
}

export interface CdiSpec {
  cdiVersion: string;
  kind: string;
  devices: { name: string; containerEdits: { env: string[]; mounts: CdiMount[] } }[];
}

function edits(workloadDir: string, env: string[]): CdiSpec["devices"][number]["containerEdits"] {
  return {
    env: [`VFIO_BROKER_SOCKET=${CONTAINER_SOCKET}`, ...env],
    mounts: [
      {
        hostPath: workloadDir,
        containerPath: CONTAINER_SOCKET_DIR,
        type: "bind",
        options: ["rbind", "ro", "nosuid", "nodev", "noexec"],
      },
    ],
  };
}

/** The transient spec for one prepared claim; its one device is named by the claim UID. */
export function claimSpec(claimUid: string, workloadDir: string): CdiSpec {
  return {
    cdiVersion: CDI_VERSION,
    kind: CLAIM_CDI_KIND,
    devices: [{ name: claimUid, containerEdits: edits(workloadDir, [`VFIO_BROKER_CLAIM=${claimUid}`]) }],
  };
}

/** The spec for one device offered through the device plugin; its device is named by the device. */
export function deviceSpec(deviceName: string, workloadDir: string): CdiSpec {
  return {
    cdiVersion: CDI_VERSION,
    kind: DEVICE_CDI_KIND,
    devices: [{ name: deviceName, containerEdits: edits(workloadDir, [`VFIO_BROKER_DEVICE=${deviceName}`]) }],
  };
}

/** The fully qualified CDI device id ("vendor/class=name"). */
export function cdiDeviceId(kind: string, name: string): string {
  return `${kind}=${name}`;
}

/** The spec's file name in the CDI directory: the kind with "/" as "_", then the device name. */
export function specFileName(kind: string, name: string): string {
  return `${kind.replace("/", "_")}_${name}.json`;
}
