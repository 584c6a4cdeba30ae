// Real container identities (docs/design.md §10): two podman containers (runc, cgroupfs) with
// Kubernetes-like cgroup paths (--cgroup-parent=/kubepods/<qos>/pod<uid>) reach brokerd through its
// socket directory bind-mounted at /run/vfio-broker. The policy allows one container of one pod by
// `containers:` and `pods:`; the other is denied. brokerd names both in Hello and in the journal.
// The image is built here with `podman import` (no registry): the host's node binary and its
// libraries; the checkout is mounted read-only. Fails (does not skip) when podman or runc is missing.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type BrokerProcess, REPO, run, startBrokerd, tempDir } from "../lib/brokerd.js";

const IMAGE = `localhost/vfio-broker-test-node:${process.pid}`;
const PODMAN = ["--runtime=runc", "--cgroup-manager=cgroupfs"];
const have = async (cmd: string) => (await run("sh", ["-c", `command -v ${cmd}`])).code === 0;

let skip = "";
let b: BrokerProcess | undefined;
const created: string[] = [];

async function podman(args: string[], timeoutMs = 60_000) {
  return run("podman", [...PODMAN, ...args], { timeoutMs });
}

/** A rootfs with node and the libraries ldd names, imported as an image. */
async function buildImage(): Promise<void> {
  const root = tempDir("vfio-broker-img-");
  try {
    const ldd = await run("ldd", [process.execPath]);
    assert.equal(ldd.code, 0, ldd.stderr);
    const libs = [...ldd.stdout.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]!);
    for (const f of [process.execPath, ...libs]) {
      const real = (await run("readlink", ["-f", f])).stdout.trim();
      const dest = join(root, f === process.execPath ? "/usr/bin/node" : f);
      mkdirSync(join(dest, ".."), { recursive: true });
      copyFileSync(real, dest);
    }
    for (const d of ["tmp", "run/vfio-broker", "app", "proc", "sys", "dev", "etc"])
      mkdirSync(join(root, d), { recursive: true });
    const tar = join(root, "..", `${process.pid}-rootfs.tar`);
    const t = await run("tar", ["-C", root, "-cf", tar, "."]);
    assert.equal(t.code, 0, t.stderr);
    const imp = await podman(["import", tar, IMAGE]);
    rmSync(tar, { force: true });
    assert.equal(imp.code, 0, imp.stderr);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const POD_A = randomUUID();
const POD_B = randomUUID();
let idA = "";
let idB = "";

async function create(pod: string, qos: string, dir: string): Promise<string> {
  const r = await podman([
    "create",
    "--network=none",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=20000:20000",
    `--cgroup-parent=/kubepods/${qos}/pod${pod}`,
    "-v",
    `${dir}:/run/vfio-broker`,
    "-v",
    `${REPO}:/app:ro`,
    IMAGE,
    "/usr/bin/node",
    "/app/test/dist/e2e/agents/mounted.js",
    "/run/vfio-broker/broker.sock",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const id = r.stdout.trim().split("\n").at(-1)!;
  assert.match(id, /^[0-9a-f]{64}$/);
  created.push(id);
  return id;
}

before(async () => {
  if (!(await have("podman")) || !(await have("runc"))) {
    // A real container is the point of this test: fail (never skip) without one, as the
    // Prometheus and Chromium tests do.
    skip = "podman and runc are needed: apt-get install -y --no-install-recommends podman runc";
    return;
  }
  await buildImage();
  const dir = tempDir("vfio-broker-ctr-");
  idA = await create(POD_A, "besteffort", dir);
  idB = await create(POD_B, "burstable", dir);
  // Container A of pod A may map sim0; nothing else may. (B is in no rule at all.)
  b = await startBrokerd({
    dir,
    policyText: `version: 1
rules:
  - name: pod-a-only
    match:
      containers: ["${idA.slice(0, 12)}*"]
      pods: ["${POD_A}"]
    devices: [sim0]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
`,
  });
});

after(async () => {
  for (const id of created) await podman(["rm", "-f", id]);
  if (!skip) await podman(["rmi", "-f", IMAGE]);
  await b?.stop();
});

async function startAgent(id: string) {
  const r = await podman(["start", "-a", id], 60_000);
  const line = r.stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line);
  } catch {
    assert.fail(`container ${id.slice(0, 12)} printed no result (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

test("the allowed container maps through the mounted socket dir, and Hello names its container and pod", async () => {
  if (skip) assert.fail(skip);
  const out = await startAgent(idA);
  assert.equal(out.ok, true, out.message);
  assert.equal(out.value, "mounted!");
  assert.equal(out.fdSocketPath, "/run/vfio-broker/fd.sock", "found next to the broker socket");
  assert.notEqual(out.advertised, out.fdSocketPath, "the host path is not what the container used");
  assert.equal(out.identity.containerId, idA);
  assert.equal(out.identity.containerRuntime, "podman");
  assert.equal(out.identity.podUid, POD_A);
  assert.equal(out.identity.qosClass, "besteffort");
});

test("the other container is denied, by the same kernel-read identity", async () => {
  if (skip) assert.fail(skip);
  const out = await startAgent(idB);
  assert.equal(out.ok, false);
  assert.equal(out.code, "PERMISSION_DENIED", out.message);
});

test("the journal's session.open lines carry both containers' ids, pods and QoS classes", async () => {
  if (skip) assert.fail(skip);
  assert.ok(b && existsSync(b.journal));
  const opens = readFileSync(b.journal, "utf8")
    .split("\n")
    .filter((l) => l.includes('"session.open"'))
    .map((l) => JSON.parse(l));
  const a = opens.find((o) => o.containerId === idA);
  const other = opens.find((o) => o.containerId === idB);
  assert.ok(a && other, `session.open lines: ${JSON.stringify(opens)}`);
  assert.deepEqual([a.containerRuntime, a.podUid, a.qosClass], ["podman", POD_A, "besteffort"]);
  assert.deepEqual([other.containerRuntime, other.podUid, other.qosClass], ["podman", POD_B, "burstable"]);
});
