// The ResourceSlice (resource.k8s.io/v1) that describes the devices brokerd serves on this node:
// one pool named after the node, one device per brokerd device, with the attributes a DeviceClass
// or a claim's selector can match (deviceId, regions, wc, mode). Pure: brokerd's device list in,
// the object and the slice-name to brokerd-id map out.
import type { Device } from "@vfio-broker/proto";
import { Attribute } from "@vfio-broker/proto";
import { DRIVER } from "./names.js";

/** A ResourceSlice device name (a DNS label) for brokerd's device id: "0000:3b:00.0" -> "pci-0000-3b-00-0". */
export function sliceDeviceName(brokerId: string): string {
  const bdf = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(brokerId);
  const name = brokerId
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
  return (bdf ? `pci-${name}` : name).slice(0, 63);
}

/** The slice-device-name -> brokerd-id map, for reading allocation results. */
export function deviceNameMap(devices: Device[]): Map<string, string> {
  return new Map(devices.map((d) => [sliceDeviceName(d.id), d.id]));
}

export function sliceName(nodeName: string): string {
  return `${nodeName}-${DRIVER}`;
}

type AttrValue = { string: string } | { bool: boolean };

function attributes(d: Device): Record<string, AttrValue> {
  const mappable = d.regions.filter((r) => r.mappable);
  return {
    deviceId: { string: d.id.slice(0, 64) },
    regions: {
      string: mappable
        .map((r) => r.name)
        .join(",")
        .slice(0, 64),
    },
    wc: { bool: mappable.some((r) => r.attributes.includes(Attribute.WC)) },
    mode: { string: d.backend.slice(0, 64) },
  };
}

/** The slice's spec for `devices` on `nodeName`, at pool generation `generation`. */
export function sliceSpec(nodeName: string, devices: Device[], generation: number): Record<string, unknown> {
  return {
    driver: DRIVER,
    nodeName,
    pool: { name: nodeName, generation, resourceSliceCount: 1 },
    devices: devices.map((d) => ({ name: sliceDeviceName(d.id), attributes: attributes(d) })),
  };
}

/** Whether two specs publish the same devices (the pool generation aside). */
export function sameDevices(a: Record<string, unknown> | undefined, b: Record<string, unknown>): boolean {
  return JSON.stringify(a?.devices ?? null) === JSON.stringify(b.devices);
}
