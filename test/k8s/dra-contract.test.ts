// The DRA kubelet plugin's gRPC contract, driven as the kubelet drives it: a client built from the
// kubelet's API definitions (test/k8s/kubelet-api, loaded by @grpc/proto-loader) calls the agent's
// registration socket and DRA socket. brokerd runs as its own process (the agent reads its device
// list and binds claims over the admin socket: AdminService.ListClaims shows what it bound); the
// API server is the HTTPS stand-in (apiserver-standin.ts).
// Covers: registration, prepare, unprepare, repeated calls, unknown claims, claims for devices
// this node does not have (each a per-claim error), and the checkpoint across an agent restart.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import { type BrokerProcess, startBrokerd } from "../lib/brokerd.js";
import { type Agent, startAgent } from "./agent.js";
import { allocatedClaim, type StandIn, startStandIn } from "./apiserver-standin.js";
import { draApi, kubeletClient, registrationApi } from "./kubelet-client.js";

const NODE = "node-a";
const NS = "team";
const POD = "0f0f0f0f-1111-4222-8333-444444444444";
const uid = (n: number) => `aaaaaaaa-bbbb-4ccc-8ddd-${String(n).padStart(12, "0")}`;
const DRA = "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin";

let b: BrokerProcess;
let api: StandIn;
let dir: string;
let cdiDir: string;
let agent: Agent;

/** brokerd's claim bindings, keyed by claim UID. */
async function bound(): Promise<Map<string, object>> {
  const admin = createClient(AdminService, `unix:${b.adminSocket}`);
  try {
    const res = await admin.listClaims({});
    return new Map(
      res.claims.map((c) => [
        c.claimUid,
        { namespace: c.namespace, claimName: c.claimName, podUids: c.podUids, deviceIds: c.deviceIds },
      ]),
    );
  } finally {
    admin.close();
  }
}

function addClaim(
  n: number,
  results: { driver: string; pool: string; device: string }[],
): { namespace: string; name: string; uid: string } {
  const ref = { namespace: NS, name: `claim-${n}`, uid: uid(n) };
  api.claims.set(`${NS}/${ref.name}`, allocatedClaim({ ...ref, podUid: POD, results }));
  return ref;
}

const start = () => startAgent({ dir, cdiDir, adminSocket: b.adminSocket, api, node: NODE });

type PrepareRes = {
  claims: Record<
    string,
    {
      devices: {
        request_names: string[];
        pool_name: string;
        device_name: string;
        cdi_device_ids: string[];
      }[];
      error: string;
    }
  >;
};
type UnprepareRes = { claims: Record<string, { error: string }> };

const prepare = (...claims: object[]) =>
  kubeletClient(draApi, DRA, agent.pluginSocket)<PrepareRes>("NodePrepareResources", { claims });
const unprepare = (...claims: object[]) =>
  kubeletClient(draApi, DRA, agent.pluginSocket)<UnprepareRes>("NodeUnprepareResources", { claims });
const specPath = (u: string) => join(cdiDir, `vfio-broker.io_claim_${u}.json`);

before(async () => {
  b = await startBrokerd();
  api = await startStandIn();
  dir = mkdtempSync(join(tmpdir(), "k8s-agent-"));
  cdiDir = join(dir, "cdi");
  agent = await start();
});

after(async () => {
  await agent?.sockets.stop();
  await api?.close();
  await b?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("registration: GetInfo names a DRAPlugin of vfio-broker.io at the plugin socket, serving v1.DRAPlugin", async () => {
  const reg = kubeletClient(registrationApi, "pluginregistration.Registration", agent.registrationSocket);
  const info = await reg("GetInfo", {});
  assert.deepEqual(info, {
    type: "DRAPlugin",
    name: "vfio-broker.io",
    endpoint: agent.pluginSocket,
    supported_versions: ["v1.DRAPlugin"],
  });
  await reg("NotifyRegistrationStatus", { plugin_registered: true, error: "" });
  assert.equal(agent.sockets.registration.registered, true);
  assert.equal(
    statSync(agent.pluginSocket).mode & 0o777,
    0o600,
    "only root (the kubelet) may call the plugin",
  );
});

test("prepare: the claim's device, its CDI id, one transient CDI spec, and the pod bound to sim0", async () => {
  const ref = addClaim(1, [{ driver: "vfio-broker.io", pool: NODE, device: "sim0" }]);
  const res = await prepare(ref);
  assert.deepEqual(res.claims[ref.uid], {
    error: "",
    devices: [
      {
        request_names: ["bar"],
        pool_name: NODE,
        device_name: "sim0",
        cdi_device_ids: [`vfio-broker.io/claim=${ref.uid}`],
      },
    ],
  });
  const spec = JSON.parse(readFileSync(specPath(ref.uid), "utf8"));
  assert.equal(spec.cdiVersion, "0.5.0");
  assert.equal(spec.kind, "vfio-broker.io/claim");
  assert.deepEqual(spec.devices[0].name, ref.uid);
  assert.deepEqual(spec.devices[0].containerEdits.mounts, [
    {
      hostPath: "/run/vfio-broker",
      containerPath: "/run/vfio-broker",
      type: "bind",
      options: ["rbind", "ro", "nosuid", "nodev", "noexec"],
    },
  ]);
  assert.ok(spec.devices[0].containerEdits.env.includes("VFIO_BROKER_SOCKET=/run/vfio-broker/broker.sock"));
  assert.deepEqual((await bound()).get(ref.uid), {
    namespace: NS,
    claimName: ref.name,
    podUids: [POD],
    deviceIds: ["sim0"],
  });
});

test("prepare again: the same answer, from the checkpoint (the API server is not asked again)", async () => {
  const ref = { namespace: NS, name: "claim-1", uid: uid(1) };
  const reads = api.log.length;
  const res = await prepare(ref);
  assert.equal(res.claims[ref.uid]?.error, "");
  assert.deepEqual(res.claims[ref.uid]?.devices[0]?.cdi_device_ids, [`vfio-broker.io/claim=${ref.uid}`]);
  assert.equal(api.log.length, reads);
});

test("a second pod sharing the prepared claim (the kubelet prepares once per node) is bound by the refresh", async () => {
  const ref = { namespace: NS, name: "claim-1", uid: uid(1) };
  const second = "0f0f0f0f-1111-4222-8333-555555555555";
  const doc = api.claims.get(`${NS}/claim-1`) as { status: { reservedFor: object[] } };
  doc.status.reservedFor.push({ resource: "pods", name: "workload-2", uid: second });
  assert.deepEqual(await agent.driver.refreshPods(), [ref.uid]);
  assert.deepEqual((await bound()).get(ref.uid), {
    namespace: NS,
    claimName: ref.name,
    podUids: [POD, second],
    deviceIds: ["sim0"],
  });
  assert.deepEqual(agent.checkpoint.get(ref.uid)?.podUids, [POD, second]);
  assert.deepEqual(await agent.driver.refreshPods(), [], "nothing changed since");
  doc.status.reservedFor.pop();
  assert.deepEqual(await agent.driver.refreshPods(), [ref.uid]);
  assert.deepEqual(agent.checkpoint.get(ref.uid)?.podUids, [POD]);
});

test("unknown claim, foreign pool, device not on this node, another driver: per-claim errors beside a good claim", async () => {
  const unknown = { namespace: NS, name: "nope", uid: uid(2) };
  const foreignPool = addClaim(3, [{ driver: "vfio-broker.io", pool: "node-b", device: "sim0" }]);
  const missing = addClaim(4, [{ driver: "vfio-broker.io", pool: NODE, device: "sim99" }]);
  const otherDriver = addClaim(5, [{ driver: "gpu.example.com", pool: NODE, device: "gpu0" }]);
  const good = addClaim(6, [{ driver: "vfio-broker.io", pool: NODE, device: "sim1" }]);
  const badUid = { namespace: NS, name: "x", uid: "../../etc" };
  const res = await prepare(unknown, foreignPool, missing, otherDriver, good, badUid);
  assert.equal(Object.keys(res.claims).length, 6, "every claim of the request has an entry");
  assert.match(res.claims[unknown.uid]!.error, /not found/);
  assert.match(
    res.claims[foreignPool.uid]!.error,
    /pool node-b, which this node \(pool node-a\) does not have/,
  );
  assert.match(res.claims[missing.uid]!.error, /device sim99 .* does not have/);
  assert.match(res.claims[otherDriver.uid]!.error, /no allocation result for driver vfio-broker.io/);
  assert.match(res.claims["../../etc"]!.error, /not a UUID/);
  assert.equal(res.claims[good.uid]!.error, "");
  const inBrokerd = await bound();
  assert.ok(inBrokerd.has(good.uid));
  for (const r of [unknown, foreignPool, missing, otherDriver]) {
    assert.deepEqual(res.claims[r.uid]!.devices, []);
    assert.equal(existsSync(specPath(r.uid)), false);
    assert.equal(inBrokerd.has(r.uid), false);
  }
});

test("a claim whose UID differs from the kubelet's (deleted and created again) is refused", async () => {
  const ref = addClaim(7, [{ driver: "vfio-broker.io", pool: NODE, device: "sim0" }]);
  const res = await prepare({ ...ref, uid: uid(8) });
  assert.match(res.claims[uid(8)]!.error, /has uid .*, not/);
});

test("unprepare: removes the spec and unbinds; again, and for a claim never prepared, it succeeds", async () => {
  const ref = { namespace: NS, name: "claim-6", uid: uid(6) };
  assert.ok(existsSync(specPath(ref.uid)));
  const res = await unprepare(ref);
  assert.deepEqual(res.claims, { [ref.uid]: { error: "" } });
  assert.equal(existsSync(specPath(ref.uid)), false);
  assert.equal((await bound()).has(ref.uid), false, "brokerd no longer binds it");
  assert.deepEqual(await unprepare(ref), { claims: { [ref.uid]: { error: "" } } });
  const never = { namespace: NS, name: "never", uid: uid(9) };
  assert.deepEqual(await unprepare(never), { claims: { [never.uid]: { error: "" } } });
});

test("agent restart: the checkpoint keeps the prepared claim; prepare answers it, unprepare removes it", async () => {
  const ref = { namespace: NS, name: "claim-1", uid: uid(1) };
  await agent.sockets.stop();
  api.claims.delete(`${NS}/claim-1`); // the restarted agent must not need the API server for it
  agent = await start();
  assert.deepEqual(
    agent.checkpoint.all().map((c) => c.uid),
    [ref.uid],
  );
  const res = await prepare(ref);
  assert.equal(res.claims[ref.uid]?.error, "");
  assert.equal(res.claims[ref.uid]?.devices[0]?.device_name, "sim0");
  assert.deepEqual((await bound()).get(ref.uid), {
    namespace: NS,
    claimName: "claim-1",
    podUids: [POD],
    deviceIds: ["sim0"],
  });
  assert.deepEqual(await unprepare(ref), { claims: { [ref.uid]: { error: "" } } });
  assert.equal(existsSync(specPath(ref.uid)), false);
  assert.equal(agent.checkpoint.size, 0);
  const checkpointDir = join(dir, "checkpoint");
  assert.equal(statSync(checkpointDir).mode & 0o777, 0o700);
  assert.equal(statSync(join(checkpointDir, "checkpoint.json")).mode & 0o777, 0o600);
});

test("more claims in one call than the limit: INVALID_ARGUMENT for the call", async () => {
  const claims = Array.from({ length: 129 }, (_, i) => ({
    namespace: NS,
    name: `c${i}`,
    uid: uid(1000 + i),
  }));
  await assert.rejects(
    prepare(...claims),
    (e: { code?: number; details?: string }) => e.code === 3 && /at most 128/.test(e.details ?? ""),
  );
});
