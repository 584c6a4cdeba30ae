// deploy/cdi/vfio-broker.json with a real CDI consumer: podman 4.3 resolves
// `--device vfio-broker.io/socket=NAME` from the spec directories /etc/cdi and /var/run/cdi (it
// has no option for another directory: containers.conf's cdi_spec_dirs and --cdi-spec-dir came
// in later podman releases; it reads cdiVersion up to 0.5.0). So the test installs the shipped
// spec in /var/run/cdi under a name of its own, with only hostPath pointed at this test's brokerd
// (a temp dir, not the host's /run/vfio-broker), and removes it afterwards. The container (uid
// 1000, no network, no capabilities, nothing else mounted) finds the socket by the injected
// VFIO_BROKER_SOCKET alone and maps sim0 BAR2 WC. Fails (never skips) without podman or runc.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type BrokerProcess, REPO, startBrokerd } from "../lib/brokerd.js";
import { buildBaseImages, buildImage, IMAGE, must, podman, requireTools } from "./support.js";

const SPEC = join(REPO, "deploy/cdi/vfio-broker.json");
const NAME = `test-${process.pid}`;
const INSTALLED = `/var/run/cdi/vfio-broker-${NAME}.json`;
const RUN = ["run", "--rm", "--user", "1000:1000", "--network", "none", "--read-only", "--cap-drop", "ALL"];
let b: BrokerProcess | undefined;

interface CdiSpec {
  cdiVersion: string;
  kind: string;
  devices: {
    name: string;
    containerEdits: {
      env: string[];
      mounts: { hostPath: string; containerPath: string; type: string; options: string[] }[];
    };
  }[];
}

before(async () => {
  await requireTools("podman", "runc", "debootstrap", "npm");
  await buildBaseImages();
  await buildImage();
  b = await startBrokerd();
});

after(async () => {
  rmSync(INSTALLED, { force: true });
  await b?.stop();
});

test("the shipped spec: kind vfio-broker.io/socket, device default, the workload dir read-only and VFIO_BROKER_SOCKET", () => {
  const spec = JSON.parse(readFileSync(SPEC, "utf8")) as CdiSpec;
  assert.equal(spec.cdiVersion, "0.5.0", "podman 4.3's CDI library reads cdiVersion up to 0.5.0");
  assert.equal(spec.kind, "vfio-broker.io/socket");
  assert.deepEqual(
    spec.devices.map((d) => d.name),
    ["default"],
  );
  const edits = spec.devices[0]!.containerEdits;
  assert.deepEqual(edits.env, ["VFIO_BROKER_SOCKET=/run/vfio-broker/broker.sock"]);
  assert.deepEqual(
    edits.mounts.map((m) => [m.hostPath, m.containerPath, m.type]),
    [["/run/vfio-broker", "/run/vfio-broker", "bind"]],
  );
  // Read-only: a workload (root in its container included) connects, and changes nothing there.
  assert.deepEqual(edits.mounts[0]!.options, ["rbind", "ro", "nosuid", "nodev", "noexec"]);
});

test("podman --device vfio-broker.io/socket=NAME: a uid 1000 container maps sim0 BAR2 WC through the injected socket", async (t) => {
  assert.ok(b);
  const spec = JSON.parse(readFileSync(SPEC, "utf8")) as CdiSpec;
  spec.devices[0]!.name = NAME;
  spec.devices[0]!.containerEdits.mounts[0]!.hostPath = b.dir;
  mkdirSync("/var/run/cdi", { recursive: true });
  writeFileSync(INSTALLED, JSON.stringify(spec));
  const t0 = Date.now();
  const r = await must(
    "podman run --device vfio-broker.io/socket",
    podman([
      ...RUN,
      "--device",
      `vfio-broker.io/socket=${NAME}`,
      IMAGE,
      "sh",
      "-c",
      'echo "socket=$VFIO_BROKER_SOCKET"; exec vfio-broker map sim0 BAR2 --length 8192 --attr wc --write 0x100=cafef00d0badc0de --read 0x100:8 --json',
    ]),
  );
  t.diagnostic(`container run through CDI: ${Date.now() - t0} ms`);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines[0], "socket=/run/vfio-broker/broker.sock", r.stdout);
  const out = JSON.parse(lines.at(-1)!);
  assert.equal(out.effectiveAttribute, "wc");
  assert.equal(out.reads[0].hex, "cafef00d0badc0de");
  // brokerd (on the host) read the client's identity from the kernel: uid 1000 in a container.
  const open = readFileSync(b.journal, "utf8")
    .split("\n")
    .filter((l) => l.includes('"session.open"'))
    .map((l) => JSON.parse(l))
    .find((o) => o.uid === 1000);
  assert.ok(open, "brokerd journaled the container's session");
  assert.match(open.containerId ?? "", /^[0-9a-f]{64}$/);
});

test("without the CDI device the same container has no socket and no VFIO_BROKER_SOCKET", async () => {
  const r = await podman([
    ...RUN,
    IMAGE,
    "sh",
    "-c",
    'test -z "$VFIO_BROKER_SOCKET" && ! test -e /run/vfio-broker/broker.sock',
  ]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
});
