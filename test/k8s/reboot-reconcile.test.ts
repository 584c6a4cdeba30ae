// A node reboot, as the agent sees it: brokerd keeps claim bindings across its own restarts, but
// after a reboot it sets its state store aside, while the agent's checkpoint still has the claims.
// Simulated with brokerd as its own process: stopped, its state directory removed, and a fresh
// brokerd started on the same sockets. Covers (a) a repeated NodePrepareResources binds the claim
// again before it answers, (b) with no prepare, the agent's reconcile binds it again, and a brokerd
// that is down makes reconcile throw (the caller logs and retries) without touching the checkpoint.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import { type BrokerProcess, startBrokerd } from "../lib/brokerd.js";
import { type Agent, startAgent } from "./agent.js";
import { allocatedClaim, type StandIn, startStandIn } from "./apiserver-standin.js";
import { draApi, kubeletClient } from "./kubelet-client.js";

const NODE = "node-a";
const NS = "team";
const POD = "0f0f0f0f-1111-4222-8333-555555555555";
const uid = (n: number) => `cccccccc-bbbb-4ccc-8ddd-${String(n).padStart(12, "0")}`;
const DRA = "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin";

let b: BrokerProcess;
let api: StandIn;
let dir: string;
let agent: Agent;

async function bound(): Promise<Map<string, object>> {
  const admin = createClient(AdminService, `unix:${b.adminSocket}`);
  try {
    const res = await admin.listClaims({});
    return new Map(res.claims.map((c) => [c.claimUid, { podUids: c.podUids, deviceIds: c.deviceIds }]));
  } finally {
    admin.close();
  }
}

function addClaim(n: number): { namespace: string; name: string; uid: string } {
  const ref = { namespace: NS, name: `claim-${n}`, uid: uid(n) };
  const results = [{ driver: "vfio-broker.io", pool: NODE, device: "sim0" }];
  api.claims.set(`${NS}/${ref.name}`, allocatedClaim({ ...ref, podUid: POD, results }));
  return ref;
}

type PrepareRes = { claims: Record<string, { error: string }> };
const prepare = (...claims: object[]) =>
  kubeletClient(draApi, DRA, agent.pluginSocket)<PrepareRes>("NodePrepareResources", { claims });

/** Stops brokerd, leaving its sockets' directory, and removes its state directory. */
async function stopAsForReboot(): Promise<void> {
  const exited = new Promise((r) => b.proc.once("exit", r));
  b.proc.kill("SIGTERM");
  await exited;
  rmSync(b.stateDir, { recursive: true, force: true });
}

/** The reboot: brokerd stopped, its state gone, a fresh brokerd on the same sockets. */
async function reboot(): Promise<void> {
  await stopAsForReboot();
  b = await startBrokerd({ dir: b.dir });
  assert.deepEqual([...(await bound()).keys()], [], "the fresh brokerd has no bindings");
}

before(async () => {
  b = await startBrokerd();
  api = await startStandIn();
  dir = mkdtempSync(join(tmpdir(), "k8s-reboot-"));
  agent = await startAgent({ dir, cdiDir: join(dir, "cdi"), adminSocket: b.adminSocket, api, node: NODE });
});

after(async () => {
  await agent?.sockets.stop();
  await api?.close();
  await b?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const want = { podUids: [POD], deviceIds: ["sim0"] };

test("after a reboot, a repeated prepare of a checkpointed claim binds it again before answering", async () => {
  const ref = addClaim(1);
  assert.equal((await prepare(ref)).claims[ref.uid]?.error, "");
  assert.deepEqual((await bound()).get(ref.uid), want);
  await reboot();
  assert.ok(agent.checkpoint.get(ref.uid), "the agent's checkpoint still has the claim");
  assert.equal((await prepare(ref)).claims[ref.uid]?.error, "");
  assert.deepEqual((await bound()).get(ref.uid), want);
});

test("after a reboot, with no prepare, reconcile binds every checkpointed claim again", async () => {
  const ref2 = addClaim(2);
  assert.equal((await prepare(ref2)).claims[ref2.uid]?.error, "");
  assert.deepEqual(await agent.driver.reconcile(), { rebound: [], failed: [] }, "nothing lost yet");
  await reboot();
  const got = await agent.driver.reconcile();
  assert.deepEqual(got.failed, []);
  assert.deepEqual(got.rebound.sort(), [uid(1), uid(2)].sort());
  const now = await bound();
  assert.deepEqual(now.get(uid(1)), want);
  assert.deepEqual(now.get(uid(2)), want);
  assert.deepEqual(await agent.driver.reconcile(), { rebound: [], failed: [] }, "nothing lost since");
});

test("reconcile with brokerd down throws (retried at the next tick) and keeps the checkpoint", async () => {
  await stopAsForReboot();
  await assert.rejects(agent.driver.reconcile());
  assert.ok(agent.checkpoint.get(uid(1)) && agent.checkpoint.get(uid(2)));
  b = await startBrokerd({ dir: b.dir });
  assert.deepEqual((await agent.driver.reconcile()).rebound.sort(), [uid(1), uid(2)].sort());
  assert.deepEqual((await bound()).get(uid(2)), want);
});
