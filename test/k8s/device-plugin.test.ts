// The device plugin fallback (kubelet API deviceplugin/v1beta1), driven as the kubelet drives it
// with clients built from the kubelet's API definitions (test/k8s/kubelet-api): the test plays the
// kubelet's Registration service on its own socket, the agent registers there, and the "kubelet"
// then calls the plugin's socket: options, ListAndWatch (the devices a real brokerd process
// serves, and an update when they change), Allocate (CDI device names, one spec per device with
// the same edits as a claim's), Allocate of a device not on this node, PreStartContainer.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { listBrokerdDevices } from "@vfio-broker/k8s/brokerd-devices";
import { CdiStore } from "@vfio-broker/k8s/cdi-store";
import { DevicePluginServer, devicePluginSocket } from "@vfio-broker/k8s/device-plugin";
import { deviceNameMap } from "@vfio-broker/k8s/slice";
import { type BrokerProcess, startBrokerd } from "../lib/brokerd.js";
import { devicePluginApi, kubeletClient, serviceOf } from "./kubelet-client.js";

let b: BrokerProcess;
let dir: string;
let kubelet: grpc.Server;
let plugin: DevicePluginServer;
let names: string[];
const registered: Record<string, unknown>[] = [];
const DP = "v1beta1.DevicePlugin";

before(async () => {
  b = await startBrokerd();
  dir = mkdtempSync(join(tmpdir(), "k8s-dp-"));
  kubelet = new grpc.Server();
  kubelet.addService(serviceOf(devicePluginApi, "v1beta1.Registration"), {
    Register: (
      call: grpc.ServerUnaryCall<Record<string, unknown>, object>,
      cb: grpc.sendUnaryData<object>,
    ) => {
      registered.push(call.request);
      cb(null, {});
    },
  });
  await new Promise<void>((r, j) =>
    kubelet.bindAsync(`unix:${join(dir, "kubelet.sock")}`, grpc.ServerCredentials.createInsecure(), (e) =>
      e ? j(e) : r(),
    ),
  );
  names = [...deviceNameMap(await listBrokerdDevices(b.adminSocket)).keys()];
  plugin = new DevicePluginServer(new CdiStore(join(dir, "cdi")), "/run/vfio-broker");
  plugin.setDevices(names);
  await plugin.serve(devicePluginSocket(dir));
});

after(async () => {
  await plugin?.stop();
  kubelet?.forceShutdown();
  await b?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("Register: version v1beta1, the socket's name in the device-plugins directory, the resource name", async () => {
  await plugin.register(join(dir, "kubelet.sock"), devicePluginSocket(dir));
  assert.deepEqual(registered, [
    {
      version: "v1beta1",
      endpoint: "vfio-broker.sock",
      resource_name: "vfio-broker.io/device",
      options: { pre_start_required: false, get_preferred_allocation_available: false },
    },
  ]);
});

test("GetDevicePluginOptions and PreStartContainer", async () => {
  const dp = kubeletClient(devicePluginApi, DP, devicePluginSocket(dir));
  assert.deepEqual(await dp("GetDevicePluginOptions", {}), {
    pre_start_required: false,
    get_preferred_allocation_available: false,
  });
  assert.deepEqual(await dp("PreStartContainer", { devices_ids: ["sim0"] }), {});
});

test("ListAndWatch: brokerd's devices, healthy; a change of devices is sent on the open stream", async () => {
  const dp = kubeletClient(devicePluginApi, DP, devicePluginSocket(dir));
  const stream = (
    dp.client as unknown as {
      ListAndWatch(req: object): grpc.ClientReadableStream<{ devices: { ID: string; health: string }[] }>;
    }
  ).ListAndWatch({});
  type Listed = { devices: { ID: string; health: string }[] };
  const lists: string[][] = [];
  stream.on("error", (e: grpc.ServiceError) => assert.equal(e.code, grpc.status.CANCELLED));
  const second = new Promise<void>((resolve) =>
    stream.on("data", (m: Listed) => {
      lists.push(m.devices.map((d) => `${d.ID}:${d.health}`));
      if (lists.length === 1) plugin.setDevices(["sim0"]);
      if (lists.length === 2) resolve();
    }),
  );
  await second;
  stream.cancel();
  assert.ok(names.includes("sim0") && names.length > 1);
  assert.deepEqual(lists, [names.map((n) => `${n}:Healthy`), ["sim0:Healthy"]]);
  assert.equal(
    existsSync(join(dir, "cdi", "vfio-broker.io_device_sim1.json")),
    false,
    "a device no longer offered has no spec",
  );
  plugin.setDevices(names);
});

test("Allocate: CDI device names per container; the spec injects the socket directory read-only", async () => {
  const dp = kubeletClient(devicePluginApi, DP, devicePluginSocket(dir));
  const res = await dp("Allocate", {
    container_requests: [{ devices_ids: ["sim0"] }, { devices_ids: ["sim1"] }],
  });
  assert.deepEqual(
    (res.container_responses as { cdi_devices: object[] }[]).map((c) => c.cdi_devices),
    [[{ name: "vfio-broker.io/device=sim0" }], [{ name: "vfio-broker.io/device=sim1" }]],
  );
  const spec = JSON.parse(readFileSync(join(dir, "cdi", "vfio-broker.io_device_sim0.json"), "utf8"));
  assert.equal(spec.kind, "vfio-broker.io/device");
  assert.deepEqual(spec.devices[0].containerEdits.mounts[0].options, [
    "rbind",
    "ro",
    "nosuid",
    "nodev",
    "noexec",
  ]);
  assert.ok(spec.devices[0].containerEdits.env.includes("VFIO_BROKER_SOCKET=/run/vfio-broker/broker.sock"));
});

test("Allocate of a device this node does not have fails the call (NOT_FOUND)", async () => {
  const dp = kubeletClient(devicePluginApi, DP, devicePluginSocket(dir));
  await assert.rejects(
    dp("Allocate", { container_requests: [{ devices_ids: ["sim0", "gpu7"] }] }),
    (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND && /gpu7/.test(e.details),
  );
});

test("a restarting kubelet removes the plugin's socket: the plugin serves and registers again", async () => {
  const socket = devicePluginSocket(dir);
  assert.equal(
    await plugin.ensureRegistered(join(dir, "kubelet.sock"), socket),
    false,
    "socket in place: nothing to do",
  );
  unlinkSync(socket);
  assert.equal(await plugin.ensureRegistered(join(dir, "kubelet.sock"), socket), true);
  assert.equal(registered.length, 2);
  const dp = kubeletClient(devicePluginApi, DP, socket);
  assert.deepEqual(await dp("GetDevicePluginOptions", {}), {
    pre_start_required: false,
    get_preferred_allocation_available: false,
  });
});
