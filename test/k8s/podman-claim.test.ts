// The per-claim CDI spec the DRA plugin writes, consumed for real by podman (the CDI consumer on
// this machine; podman 4.3 reads specs only from /etc/cdi and /var/run/cdi, so the agent writes
// there, under this claim's UID, and the test removes what is left). The containers run with a
// Kubernetes pod's cgroup path (--cgroup-parent=/kubepods/besteffort/pod<uid>, cgroupfs), so
// brokerd reads the pod UID from the kernel as it does on a node. brokerd's policy grants devices
// only through bound claims (match: { claims: true }). With the claim's CDI device a uid 1000
// container maps sim0 BAR2 WC; without it the same pod's container has no socket; after
// NodeUnprepareResources a holder of the claim's mapping is revoked (reason claim-unprepared) and
// the CDI device no longer resolves. The device plugin's per-device spec resolves the same way.
// Fails (never skips) without podman or runc.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { CdiStore } from "@vfio-broker/k8s/cdi-store";
import { DevicePluginServer } from "@vfio-broker/k8s/device-plugin";
import { buildBaseImages, buildImage, must, podman, requireTools } from "../containers/support.js";
import { type BrokerProcess, startBrokerd, until } from "../lib/brokerd.js";
import { type Agent, startAgent } from "./agent.js";
import { allocatedClaim, type StandIn, startStandIn } from "./apiserver-standin.js";
import { draApi, kubeletClient } from "./kubelet-client.js";

const IMAGE = `localhost/vfio-broker-k8s-test:${process.pid}`;
const CDI_DIR = "/var/run/cdi";
const NODE = "node-c";
const POD = randomUUID();
const CLAIM = { namespace: "team", name: "bar-claim", uid: randomUUID() };
const CDI_ID = `vfio-broker.io/claim=${CLAIM.uid}`;
const HOLDER = `vfb-claim-holder-${process.pid}`;
const DRA = "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin";
/** The device plugin's device name here: unique to this run, so no other spec is touched. */
const DP_DEVICE = `sim0-${process.pid}`;
const RUN = [
  "--user",
  "1000:1000",
  "--network",
  "none",
  "--read-only",
  "--cap-drop",
  "ALL",
  `--cgroup-parent=/kubepods/besteffort/pod${POD}`,
];
const MAP = ["vfio-broker", "map", "sim0", "BAR2", "--length", "8192", "--attr", "wc", "--json"];

let b: BrokerProcess | undefined;
let s: StandIn | undefined;
let agent: Agent | undefined;
let dir = "";

type Prepared = { claims: Record<string, { error: string; devices: { cdi_device_ids: string[] }[] }> };

before(async () => {
  await requireTools("podman", "runc", "debootstrap", "npm");
  await buildBaseImages();
  await buildImage(IMAGE);
  b = await startBrokerd({
    policyText: `version: 1
rules:
  - name: bound-claims
    match: { claims: true }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
`,
  });
  s = await startStandIn();
  s.claims.set(
    `${CLAIM.namespace}/${CLAIM.name}`,
    allocatedClaim({
      ...CLAIM,
      podUid: POD,
      results: [{ driver: "vfio-broker.io", pool: NODE, device: "sim0" }],
    }),
  );
  dir = mkdtempSync(join(tmpdir(), "k8s-podman-"));
  agent = await startAgent({
    dir,
    cdiDir: CDI_DIR,
    adminSocket: b.adminSocket,
    api: s,
    node: NODE,
    workloadDir: b.dir,
  });
});

after(async () => {
  await podman(["rm", "-f", HOLDER]);
  await podman(["rmi", "-f", IMAGE]);
  rmSync(join(CDI_DIR, `vfio-broker.io_claim_${CLAIM.uid}.json`), { force: true });
  rmSync(join(CDI_DIR, `vfio-broker.io_device_${DP_DEVICE}.json`), { force: true });
  await agent?.sockets.stop();
  await s?.close();
  await b?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("with the claim's CDI device a uid 1000 container of the pod maps sim0 BAR2 WC; without it there is no socket", async () => {
  const res = await kubeletClient(
    draApi,
    DRA,
    agent!.pluginSocket,
  )<Prepared>("NodePrepareResources", { claims: [CLAIM] });
  assert.equal(res.claims[CLAIM.uid]?.error, "");
  assert.deepEqual(res.claims[CLAIM.uid]?.devices[0]?.cdi_device_ids, [CDI_ID]);

  const r = await must(
    "podman run --device <claim>",
    podman([
      "run",
      "--rm",
      ...RUN,
      "--device",
      CDI_ID,
      IMAGE,
      ...MAP,
      "--write",
      "0x100=cafef00d0badc0de",
      "--read",
      "0x100:8",
    ]),
  );
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.equal(out.effectiveAttribute, "wc");
  assert.equal(out.reads[0].hex, "cafef00d0badc0de");

  // Another pod that reaches the socket anyway (the hostPath route) holds no claim: denied.
  const otherPod = RUN.map((a) =>
    a.startsWith("--cgroup-parent=") ? `--cgroup-parent=/kubepods/besteffort/pod${randomUUID()}` : a,
  );
  const denied = await podman([
    "run",
    "--rm",
    ...otherPod,
    "-v",
    `${b!.dir}:/run/vfio-broker:ro`,
    IMAGE,
    ...MAP,
  ]);
  assert.notEqual(denied.code, 0, `a pod without the claim mapped sim0: ${denied.stdout}`);
  assert.match(denied.stderr, /denied|not allowed|permission/i);

  const none = await podman([
    "run",
    "--rm",
    ...RUN,
    IMAGE,
    "sh",
    "-c",
    'test -z "$VFIO_BROKER_SOCKET" && ! test -e /run/vfio-broker/broker.sock',
  ]);
  assert.equal(none.code, 0, none.stdout + none.stderr);
});

test("after NodeUnprepareResources the claim's holder is revoked (claim-unprepared) and the CDI device is gone", async () => {
  await must(
    "podman run -d holder",
    podman(["run", "-d", "--name", HOLDER, ...RUN, "--device", CDI_ID, IMAGE, ...MAP, "--hold"]),
  );
  await until(
    "the holder has mapped sim0 BAR2 WC",
    async () => (await podman(["logs", HOLDER])).stdout.includes('"effectiveAttribute":"wc"'),
    60_000,
    250,
  );

  const res = await kubeletClient(
    draApi,
    DRA,
    agent!.pluginSocket,
  )<{ claims: Record<string, { error: string }> }>("NodeUnprepareResources", { claims: [CLAIM] });
  assert.deepEqual(res.claims, { [CLAIM.uid]: { error: "" } });

  const waited = await podman(["wait", HOLDER]);
  assert.equal(waited.stdout.trim(), "3", "the CLI exits 3 when its mapping is revoked");
  const logs = (await podman(["logs", HOLDER])).stdout;
  assert.match(logs, /"revoked":\{"reason":"claim-unprepared"/);

  assert.equal(existsSync(join(CDI_DIR, `vfio-broker.io_claim_${CLAIM.uid}.json`)), false);
  const again = await podman(["run", "--rm", ...RUN, "--device", CDI_ID, IMAGE, "true"]);
  assert.notEqual(again.code, 0, "the claim's CDI device no longer resolves");
});

test("the device plugin's spec (vfio-broker.io/device=NAME) gives podman the same socket directory and environment", async () => {
  const plugin = new DevicePluginServer(new CdiStore(CDI_DIR), b!.dir);
  plugin.setDevices([DP_DEVICE]);
  const r = await must(
    "podman run --device vfio-broker.io/device",
    podman([
      "run",
      "--rm",
      ...RUN,
      "--device",
      `vfio-broker.io/device=${DP_DEVICE}`,
      IMAGE,
      "sh",
      "-c",
      'test -S "$VFIO_BROKER_SOCKET" && test ! -w /run/vfio-broker && echo "$VFIO_BROKER_DEVICE"',
    ]),
  );
  assert.equal(r.stdout.trim(), DP_DEVICE);
  plugin.setDevices([]);
  assert.equal(existsSync(join(CDI_DIR, `vfio-broker.io_device_${DP_DEVICE}.json`)), false);
});
