// The agent's API server side against the HTTPS stand-in (apiserver-standin.ts; no API server runs
// here): the ResourceSlice for the devices a real brokerd process serves is created with the
// node's pool and each device's attributes, left alone when nothing changed, updated with a new
// pool generation when the devices change, and retried on a stale resourceVersion (409). The
// client checks the server's certificate against the CA and sends the service account token.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ApiError, ApiServer, inClusterConfig } from "@vfio-broker/k8s/apiserver";
import { listBrokerdDevices } from "@vfio-broker/k8s/brokerd-devices";
import { publishSlice } from "@vfio-broker/k8s/publisher";
import { sliceDeviceName } from "@vfio-broker/k8s/slice";
import { type BrokerProcess, startBrokerd } from "../lib/brokerd.js";
import { type StandIn, startStandIn } from "./apiserver-standin.js";

let b: BrokerProcess;
let s: StandIn;
let api: ApiServer;
const NAME = "node-a-vfio-broker.io";

before(async () => {
  b = await startBrokerd();
  s = await startStandIn();
  api = new ApiServer({ server: s.url, token: s.token, ca: s.ca });
});

after(async () => {
  await s?.close();
  await b?.stop();
});

type Slice = {
  metadata: { resourceVersion: string };
  spec: {
    driver: string;
    nodeName: string;
    pool: { name: string; generation: number; resourceSliceCount: number };
    devices: { name: string; attributes: Record<string, object> }[];
  };
};

test("the slice of brokerd's devices is created with the node's pool and each device's attributes", async () => {
  const devices = await listBrokerdDevices(b.adminSocket);
  assert.ok(devices.some((d) => d.id === "sim0"));
  assert.equal(await publishSlice(api, "node-a", devices), "created");
  const slice = s.slices.get(NAME) as unknown as Slice;
  assert.equal(slice.spec.driver, "vfio-broker.io");
  assert.equal(slice.spec.nodeName, "node-a");
  assert.deepEqual(slice.spec.pool, { name: "node-a", generation: 1, resourceSliceCount: 1 });
  const sim0 = slice.spec.devices.find((d) => d.name === "sim0");
  assert.deepEqual(sim0?.attributes.deviceId, { string: "sim0" });
  assert.deepEqual(sim0?.attributes.mode, { string: "sim" });
  assert.deepEqual(sim0?.attributes.wc, { bool: true }, "sim0 has a prefetchable BAR mappable WC");
  assert.match((sim0?.attributes.regions as { string: string } | undefined)?.string ?? "", /BAR2/);
  assert.deepEqual(s.log.slice(-2), [
    "GET /apis/resource.k8s.io/v1/resourceslices/node-a-vfio-broker.io",
    "POST /apis/resource.k8s.io/v1/resourceslices",
  ]);
});

test("publishing the same devices again changes nothing; fewer devices: an update with the next generation", async () => {
  const devices = await listBrokerdDevices(b.adminSocket);
  const before = (s.slices.get(NAME) as unknown as Slice).metadata.resourceVersion;
  assert.equal(await publishSlice(api, "node-a", devices), "unchanged");
  assert.equal((s.slices.get(NAME) as unknown as Slice).metadata.resourceVersion, before);
  assert.equal(await publishSlice(api, "node-a", devices.slice(0, 1)), "updated");
  const slice = s.slices.get(NAME) as unknown as Slice;
  assert.equal(slice.spec.pool.generation, 2);
  assert.equal(slice.spec.devices.length, 1);
});

test("a stale resourceVersion is a 409 Conflict, and the publisher retries on the current one", async () => {
  const devices = await listBrokerdDevices(b.adminSocket);
  const stale = {
    apiVersion: "resource.k8s.io/v1",
    kind: "ResourceSlice",
    metadata: { name: NAME, resourceVersion: "1" },
    spec: {},
  };
  await assert.rejects(api.updateSlice(NAME, stale), (e) => e instanceof ApiError && e.status === 409);
  // Another writer changes the slice between the publisher's read and its write.
  let bumped = 0;
  s.afterSliceGet = (name) => {
    if (bumped++ > 0) return;
    const cur = s.slices.get(name) as Record<string, unknown>;
    s.slices.set(name, { ...cur, metadata: { ...(cur.metadata as object), resourceVersion: "999999" } });
  };
  assert.equal(await publishSlice(api, "node-a", devices), "updated");
  s.afterSliceGet = undefined;
  assert.equal(bumped, 2, "read, conflict, read again");
  assert.equal((s.slices.get(NAME) as unknown as Slice).spec.devices.length, devices.length);
});

test("without the token the stand-in answers 401, and a certificate from another CA is refused", async () => {
  const noToken = new ApiServer({ server: s.url, token: "wrong", ca: s.ca });
  await assert.rejects(noToken.getSlice(NAME), (e) => e instanceof ApiError && e.status === 401);
  const other = await startStandIn();
  try {
    const wrongCa = new ApiServer({ server: s.url, token: s.token, ca: other.ca });
    await assert.rejects(wrongCa.getSlice(NAME), /self.signed|certificate/i);
  } finally {
    await other.close();
  }
  assert.throws(() => new ApiServer({ server: "http://10.0.0.1", token: "t" }), /only https/);
});

test("a projected token replaced on disk (the kubelet rotates it) is the one the next request sends", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sa-"));
  try {
    writeFileSync(join(dir, "token"), "expired\n");
    const rotating = new ApiServer({
      server: s.url,
      token: "expired",
      tokenFile: join(dir, "token"),
      ca: s.ca,
    });
    await assert.rejects(rotating.getSlice(NAME), (e) => e instanceof ApiError && e.status === 401);
    writeFileSync(join(dir, "token"), `${s.token}\n`);
    assert.ok(await rotating.getSlice(NAME));
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("in-cluster config: KUBERNETES_SERVICE_HOST/PORT, the service account's token and CA", () => {
  const dir = mkdtempSync(join(tmpdir(), "sa-"));
  writeFileSync(join(dir, "token"), "abc\n");
  writeFileSync(join(dir, "ca.crt"), "PEM");
  try {
    assert.deepEqual(
      inClusterConfig({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "6443" }, dir),
      {
        server: "https://[fd00::1]:6443",
        token: "abc",
        tokenFile: join(dir, "token"),
        ca: "PEM",
      },
    );
    assert.throws(() => inClusterConfig({}, dir), /not running in a pod/);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("slice device names are DNS labels: a PCI address becomes pci-0000-3b-00-0", () => {
  assert.equal(sliceDeviceName("0000:3b:00.0"), "pci-0000-3b-00-0");
  assert.equal(sliceDeviceName("sim0"), "sim0");
});
