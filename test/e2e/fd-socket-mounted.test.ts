// A client finds the fd channel next to the broker socket wherever the socket directory is mounted
// (docs/design.md §9): brokerd's runtime dir is bind-mounted at another path, and in the client's own
// mount namespace the original path is hidden (a tmpfs over it), as in a container that mounts
// only the socket directory. No VFIO_BROKER_FD_SOCKET: the Node and Python clients must use Hello's
// fd_socket_name next to the broker socket they were given, not the host path brokerd advertises.
import assert from "node:assert/strict";
import { existsSync, linkSync, mkdirSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type BrokerProcess, REPO, run, startBrokerd, tempDir } from "../lib/brokerd.js";

const AGENT = join(REPO, "test/dist/e2e/agents/mounted.js");
const PYCLIENT = join(REPO, "clients/python/vfio_broker_client.py");

let b: BrokerProcess;
let mnt: string;

before(async () => {
  b = await startBrokerd();
  mnt = tempDir("vfio-broker-mnt-");
});
after(async () => {
  await b?.stop();
  if (mnt) rmSync(mnt, { recursive: true, force: true });
});

/** Runs argv in a private mount namespace: brokerd's dir bound at `mnt`, the original hidden. */
function inContainerLikeNs(argv: string[]) {
  const script = [
    "set -e",
    `mount --bind "${b.dir}" "${mnt}"`,
    `mount -t tmpfs none "${b.dir}"`,
    `test ! -e "${b.fdSocket}"`,
    'exec "$@"',
  ].join("\n");
  return run("unshare", ["--mount", "--propagation", "private", "sh", "-c", script, "sh", ...argv], {
    env: { VFIO_BROKER_FD_SOCKET: "" },
    timeoutMs: 30_000,
  });
}

test("brokerd advertises fd_socket_name, the Node client finds fd.sock through a bind mount", async () => {
  const r = await inContainerLikeNs([process.execPath, AGENT, join(mnt, "broker.sock"), "grpc"]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.equal(out.ok, true, out.message);
  assert.equal(out.fdSocketName, "fd.sock");
  assert.equal(out.advertised, b.fdSocket, "Hello still names brokerd's own path");
  assert.equal(out.fdSocketPath, join(mnt, "fd.sock"));
  assert.equal(out.value, "mounted!");
  // Outside the namespace nothing changed: the host path is still brokerd's.
  assert.ok(existsSync(b.fdSocket));
});

test("the Node client's workload protocol finds fd.sock beside the broker socket through a bind mount", async () => {
  const r = await inContainerLikeNs([process.execPath, AGENT, join(mnt, "broker.sock")]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.equal(out.ok, true, out.message);
  assert.equal(out.transport, "workload");
  assert.equal(out.fdSocketPath, join(mnt, "fd.sock"));
  assert.equal(out.value, "mounted!");
});

test("the Node client falls back to the advertised path when nothing is next to the broker socket", async () => {
  // A directory holding only a symlink to broker.sock: no fd.sock beside it.
  const lone = tempDir("vfio-broker-lone-");
  try {
    mkdirSync(join(lone, "d"));
    symlinkSync(b.socket, join(lone, "d", "broker.sock"));
    // gRPC: Hello's advertised path. The workload protocol asks no Hello: it looks beside the
    // file the link points to, which is the same path here.
    for (const transport of ["grpc", "workload"]) {
      const a = await run(process.execPath, [AGENT, join(lone, "d", "broker.sock"), transport], {
        timeoutMs: 30_000,
      });
      const out = JSON.parse(a.stdout.trim().split("\n").at(-1)!);
      assert.equal(out.ok, true, out.message);
      assert.equal(out.transport, transport);
      assert.equal(out.fdSocketPath, b.fdSocket);
    }
    // A hard link is no link to follow: the workload client asks gRPC's Hello for the advertised
    // path (and ends that session at once).
    mkdirSync(join(lone, "h"));
    linkSync(b.socket, join(lone, "h", "broker.sock"));
    const h = await run(process.execPath, [AGENT, join(lone, "h", "broker.sock")], { timeoutMs: 30_000 });
    const out = JSON.parse(h.stdout.trim().split("\n").at(-1)!);
    assert.equal(out.ok, true, out.message);
    assert.equal(out.transport, "workload");
    assert.equal(out.fdSocketPath, b.fdSocket);
  } finally {
    rmSync(lone, { recursive: true, force: true });
  }
});

test("the Python client finds fd.sock through the bind mount too", async (t) => {
  const PY = "/usr/bin/python3";
  const probe = existsSync(PY) ? await run(PY, ["-c", "import grpc, grpc_tools"]) : { code: 1 };
  if (probe.code !== 0) {
    t.skip("/usr/bin/python3 with python3-grpcio and python3-grpc-tools is not installed");
    return;
  }
  const r = await inContainerLikeNs([
    PY,
    PYCLIENT,
    "--socket",
    join(mnt, "broker.sock"),
    "--json",
    "map",
    "sim0",
    "0",
    "--length",
    "4096",
    "--write",
    "0=6d6f756e74656421",
    "--read",
    "0:8",
  ]);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const out = JSON.parse(r.stdout);
  assert.equal(out.fdSocket, join(mnt, "fd.sock"));
  assert.equal(out.reads[0].hex, "6d6f756e74656421");
});
