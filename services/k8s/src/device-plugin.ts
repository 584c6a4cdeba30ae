// The device plugin fallback (kubelet API deviceplugin/v1beta1) for clusters without DRA: serves
// DevicePlugin on a socket in the kubelet's device-plugins directory, registers it with the
// kubelet's Registration service, lists brokerd's devices (ListAndWatch), and answers Allocate
// with CDI device names whose specs (one per device, the same edits as a claim's) it keeps in the
// CDI directory. The kubelet names no pod in Allocate, so this route cannot bind pods to devices
// in brokerd: the policy must match such pods some other way (docs/kubernetes.md).
import { existsSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { createClient, isUndecodable, serviceDefinition } from "@vfio-broker/proto";
import { deviceplugin } from "@vfio-broker/proto/kubelet";
import { cdiDeviceId, deviceSpec } from "./cdi-spec.js";
import type { CdiStore } from "./cdi-store.js";
import { serveUnix, stopServer } from "./grpc-unix.js";
import { DEVICE_CDI_KIND } from "./names.js";

/** The extended resource a pod requests (resources.limits["vfio-broker.io/device"]: 1). */
export const RESOURCE_NAME = "vfio-broker.io/device";
export const API_VERSION = "v1beta1";
/** Device ids in one Allocate (a pod cannot hold more devices than a node publishes). */
const MAX_ALLOCATE_IDS = 256;
/** ListAndWatch streams open at once (the kubelet holds one). */
const MAX_WATCHERS = 8;

type Stream = grpc.ServerWritableStream<unknown, deviceplugin.ListAndWatchResponse>;

export class DevicePluginServer {
  private names: string[] = [];
  private readonly watchers = new Set<Stream>();
  private server?: grpc.Server;

  constructor(
    private readonly cdi: CdiStore,
    private readonly workloadDir: string,
  ) {}

  /** Sets the device names offered (slice.ts's names), rewrites their specs, tells watchers. */
  setDevices(names: string[]): void {
    for (const old of this.names) if (!names.includes(old)) this.cdi.remove(DEVICE_CDI_KIND, old);
    for (const n of names) this.cdi.write(deviceSpec(n, this.workloadDir));
    this.names = [...names];
    for (const w of this.watchers) w.write(this.list());
  }

  private list(): deviceplugin.ListAndWatchResponse {
    return {
      devices: this.names.map((ID) => ({ ID, health: "Healthy" })),
    } as deviceplugin.ListAndWatchResponse;
  }

  async serve(socket: string): Promise<void> {
    this.server = await serveUnix(socket, (s) =>
      s.addService(serviceDefinition(deviceplugin.DevicePlugin), {
        getDevicePluginOptions: (_c: unknown, cb: grpc.sendUnaryData<object>) =>
          cb(null, { preStartRequired: false, getPreferredAllocationAvailable: false }),
        listAndWatch: (call: Stream) => {
          if (this.watchers.size >= MAX_WATCHERS) {
            call.emit("error", {
              code: grpc.status.RESOURCE_EXHAUSTED,
              details: `${MAX_WATCHERS} watchers already`,
            });
            return;
          }
          this.watchers.add(call);
          call.on("cancelled", () => this.watchers.delete(call));
          call.on("close", () => this.watchers.delete(call));
          call.write(this.list());
        },
        getPreferredAllocation: (_c: unknown, cb: grpc.sendUnaryData<object>) =>
          cb({
            code: grpc.status.UNIMPLEMENTED,
            details: "GetPreferredAllocation is not offered (getPreferredAllocationAvailable false)",
          }),
        allocate: (call: grpc.ServerUnaryCall<unknown, object>, cb: grpc.sendUnaryData<object>) => {
          const req = call.request;
          if (isUndecodable(req)) return cb({ code: grpc.status.INVALID_ARGUMENT, details: req.message });
          const r = req as deviceplugin.AllocateRequest;
          const ids = r.containerRequests.flatMap((c) => c.devicesIds);
          if (ids.length > MAX_ALLOCATE_IDS) {
            return cb({
              code: grpc.status.INVALID_ARGUMENT,
              details: `more than ${MAX_ALLOCATE_IDS} device ids`,
            });
          }
          const unknown = ids.find((id) => !this.names.includes(id));
          if (unknown !== undefined) {
            return cb({
              code: grpc.status.NOT_FOUND,
              details: `device ${unknown.slice(0, 64)} is not on this node`,
            });
          }
          cb(null, {
            containerResponses: r.containerRequests.map((c) => ({
              cdiDevices: c.devicesIds.map((id) => ({ name: cdiDeviceId(DEVICE_CDI_KIND, id) })),
            })),
          });
        },
        preStartContainer: (_c: unknown, cb: grpc.sendUnaryData<object>) => cb(null, {}),
      }),
    );
  }

  /** Registers `socket` (a name in the kubelet's device-plugins directory) with the kubelet. */
  async register(kubeletSocket: string, socket: string): Promise<void> {
    const kubelet = createClient(deviceplugin.Registration, `unix:${kubeletSocket}`);
    try {
      await kubelet.register(
        {
          version: API_VERSION,
          endpoint: socket.split("/").pop() ?? socket,
          resourceName: RESOURCE_NAME,
          options: {},
        },
        { timeoutMs: 10_000 },
      );
    } finally {
      kubelet.close();
    }
  }

  /**
   * Serves on `socket` and registers with the kubelet, again whenever the socket is gone: a
   * restarting kubelet removes the sockets in its device-plugins directory and forgets every
   * plugin. Returns whether it (re)registered.
   */
  async ensureRegistered(kubeletSocket: string, socket: string): Promise<boolean> {
    if (this.server && existsSync(socket)) return false;
    if (this.server) await this.stop();
    await this.serve(socket);
    await this.register(kubeletSocket, socket);
    return true;
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) w.end();
    this.watchers.clear();
    if (this.server) await stopServer(this.server);
    this.server = undefined;
  }
}

/** The plugin's socket path in the kubelet's device-plugins directory. */
export function devicePluginSocket(dir: string): string {
  return join(dir, "vfio-broker.sock");
}
