// Shared by the container suites (compose, CDI): the tools they need (missing ones fail the test
// with the apt-get line to run, never skip it), podman configured through CONTAINERS_CONF (the
// host's containers.conf stays untouched), the locally made base images and the project image.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { REPO, type RunResult, run, tempDir } from "../lib/brokerd.js";

/** runc, cgroupfs and the host's ulimits: see the comments in the file. */
export const CONTAINERS_CONF = join(REPO, "test/containers/containers.conf");
export const PODMAN_ENV = { CONTAINERS_CONF };
/** What docker-compose.yml and the CDI test run; built from deploy/Dockerfile. */
export const IMAGE = "localhost/vfio-broker:latest";

const TOOLS: Record<string, string> = {
  podman: "podman",
  runc: "runc",
  "docker-compose": "docker-compose",
  debootstrap: "debootstrap",
  npm: "npm",
};

/** Fails (never skips) when a tool is missing, naming the Debian packages that bring them. */
export async function requireTools(...cmds: (keyof typeof TOOLS)[]): Promise<void> {
  const missing: string[] = [];
  for (const c of cmds) if ((await run("sh", ["-c", `command -v ${c}`])).code !== 0) missing.push(c);
  assert.deepEqual(
    missing,
    [],
    `missing ${missing.join(", ")}: apt-get install -y --no-install-recommends ${missing.map((c) => TOOLS[c]).join(" ")}`,
  );
}

export function podman(args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return run("podman", args, { env: PODMAN_ENV, timeoutMs });
}

/** Runs a command to success, or fails with its output; returns it and how long it took. */
export async function must(what: string, p: Promise<RunResult>): Promise<RunResult & { ms: number }> {
  const t0 = Date.now();
  const r = await p;
  assert.equal(
    r.code,
    0,
    `${what} failed (exit ${r.code ?? r.signal}):\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`,
  );
  return { ...r, ms: Date.now() - t0 };
}

/** deploy/images/build-base.sh: the FROM images, cached across runs (seconds when warm). */
export function buildBaseImages() {
  return must(
    "deploy/images/build-base.sh",
    run("bash", [join(REPO, "deploy/images/build-base.sh")], { env: PODMAN_ENV, timeoutMs: 600_000 }),
  );
}

/**
 * deploy/Dockerfile as `tag` (default `IMAGE`; layer cache: seconds when the sources did not
 * change). A suite that must not see another checkout's build under the shared name passes its own.
 */
export function buildImage(tag = IMAGE) {
  return must(
    "podman build -f deploy/Dockerfile",
    podman(["build", "-q", "-f", join(REPO, "deploy/Dockerfile"), "-t", tag, REPO], 600_000),
  );
}

/** `podman system service` on a socket of its own, for docker-compose (DOCKER_HOST). */
export async function startPodmanService(): Promise<{ dockerHost: string; stop(): Promise<void> }> {
  const dir = tempDir("vfio-broker-podman-");
  const socket = join(dir, "podman.sock");
  const child: ChildProcess = spawn("podman", ["system", "service", "--time=0", `unix://${socket}`], {
    env: { ...process.env, ...PODMAN_ENV },
    stdio: "ignore",
  });
  const end = Date.now() + 20_000;
  while (!existsSync(socket)) {
    assert.ok(child.exitCode === null, `podman system service exited with ${child.exitCode}`);
    assert.ok(Date.now() < end, "podman system service did not create its socket in 20 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    dockerHost: `unix://${socket}`,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}
