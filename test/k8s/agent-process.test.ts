// The node agent as its own process (services/k8s/dist/main.js), the way the DaemonSet runs it:
// in-cluster config from KUBERNETES_SERVICE_HOST/PORT and a service account directory (token, CA)
// pointing at the HTTPS API server stand-in, brokerd as its own process. It publishes the node's
// ResourceSlice, registers, prepares a claim; killed and started again, it answers the same claim
// from its checkpoint (the stand-in no longer has the claim) and unprepares it. In device plugin
// mode it registers with the kubelet (played by the test) and answers Allocate.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { type BrokerProcess, REPO, startBrokerd } from "../lib/brokerd.js";
import { allocatedClaim, type StandIn, startStandIn } from "./apiserver-standin.js";
import { devicePluginApi, draApi, kubeletClient, registrationApi, serviceOf } from "./kubelet-client.js";

const AGENT = join(REPO, "services/k8s/dist/main.js");
const CLAIM = { namespace: "team", name: "claim-p", uid: "12345678-1234-4234-8234-123456789abc" };
const POD = "87654321-4321-4321-8321-cba987654321";
const DRA = "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin";
let b: BrokerProcess;
let s: StandIn;
let dir: string;
let proc: ChildProcess | undefined;

function startAgentProcess(extra: string[] = []): Promise<ChildProcess> {
  const port = new URL(s.url).port;
  const p = spawn(
    process.execPath,
    [
      AGENT,
      "--node-name",
      "node-p",
      "--admin-socket",
      b.adminSocket,
      "--workload-dir",
      b.dir,
      "--cdi-dir",
      join(dir, "cdi"),
      "--state-dir",
      join(dir, "state"),
      "--registry-dir",
      join(dir, "registry"),
      "--plugin-dir",
      join(dir, "plugin"),
      "--service-account-dir",
      join(dir, "sa"),
      ...extra,
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: port },
    },
  );
  let err = "";
  p.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    let out = "";
    p.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes('"event":"ready"')) resolve(p);
    });
    p.once("exit", (code) => reject(new Error(`the agent exited with ${code}: ${err}`)));
  });
}

async function stopAgentProcess(p: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => p.once("exit", (code) => r(code)));
  p.kill("SIGTERM");
  return exited;
}

before(async () => {
  b = await startBrokerd();
  s = await startStandIn();
  dir = mkdtempSync(join(tmpdir(), "k8s-proc-"));
  mkdirSync(join(dir, "sa"));
  writeFileSync(join(dir, "sa", "token"), `${s.token}\n`);
  writeFileSync(join(dir, "sa", "ca.crt"), s.ca);
  s.claims.set(
    `${CLAIM.namespace}/${CLAIM.name}`,
    allocatedClaim({
      ...CLAIM,
      podUid: POD,
      results: [{ driver: "vfio-broker.io", pool: "node-p", device: "sim0" }],
    }),
  );
});

after(async () => {
  if (proc && proc.exitCode === null) await stopAgentProcess(proc);
  await s?.close();
  await b?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the agent process publishes the slice, registers, prepares; after a restart it answers from its checkpoint", async () => {
  proc = await startAgentProcess();
  assert.ok(s.slices.has("node-p-vfio-broker.io"), "the ResourceSlice was created before ready");
  const reg = kubeletClient(
    registrationApi,
    "pluginregistration.Registration",
    join(dir, "registry", "vfio-broker.io-reg.sock"),
  );
  const info = await reg<{ endpoint: string }>("GetInfo", {});
  assert.equal(info.endpoint, join(dir, "plugin", "dra.sock"));
  const first = await kubeletClient(
    draApi,
    DRA,
    info.endpoint,
  )<{ claims: Record<string, { error: string; devices: object[] }> }>("NodePrepareResources", {
    claims: [CLAIM],
  });
  assert.equal(first.claims[CLAIM.uid]?.error, "");
  const spec = join(dir, "cdi", `vfio-broker.io_claim_${CLAIM.uid}.json`);
  assert.ok(existsSync(spec));
  assert.equal(await stopAgentProcess(proc), 0);

  s.claims.clear();
  proc = await startAgentProcess();
  const dra = kubeletClient(draApi, DRA, info.endpoint);
  const again = await dra<{ claims: Record<string, { error: string; devices: object[] }> }>(
    "NodePrepareResources",
    { claims: [CLAIM] },
  );
  assert.deepEqual(again.claims[CLAIM.uid], first.claims[CLAIM.uid]);
  const un = await dra<{ claims: Record<string, { error: string }> }>("NodeUnprepareResources", {
    claims: [CLAIM],
  });
  assert.deepEqual(un.claims, { [CLAIM.uid]: { error: "" } });
  assert.equal(existsSync(spec), false);
  assert.equal(await stopAgentProcess(proc), 0);
});

test("--mode device-plugin: the process registers with the kubelet and answers Allocate with CDI names", async () => {
  const dpDir = join(dir, "device-plugins");
  mkdirSync(dpDir);
  const registered: Record<string, unknown>[] = [];
  const kubelet = new grpc.Server();
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
    kubelet.bindAsync(`unix:${join(dpDir, "kubelet.sock")}`, grpc.ServerCredentials.createInsecure(), (e) =>
      e ? j(e) : r(),
    ),
  );
  try {
    proc = await startAgentProcess(["--mode", "device-plugin", "--device-plugin-dir", dpDir]);
    assert.equal(registered.length, 1, "registered before ready");
    assert.equal(registered[0]?.resource_name, "vfio-broker.io/device");
    const dp = kubeletClient(
      devicePluginApi,
      "v1beta1.DevicePlugin",
      join(dpDir, String(registered[0]?.endpoint)),
    );
    const res = await dp<{ container_responses: { cdi_devices: { name: string }[] }[] }>("Allocate", {
      container_requests: [{ devices_ids: ["sim0"] }],
    });
    assert.deepEqual(res.container_responses[0]?.cdi_devices, [{ name: "vfio-broker.io/device=sim0" }]);
    assert.ok(existsSync(join(dir, "cdi", "vfio-broker.io_device_sim0.json")));
    assert.equal(await stopAgentProcess(proc), 0);
  } finally {
    kubelet.forceShutdown();
  }
});
