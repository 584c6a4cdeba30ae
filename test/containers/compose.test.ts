// The top-level docker-compose.yml, for real (issue 11): Debian's docker-compose 1.29 through
// podman's Docker-compatible socket validates the file, builds the image from the local base
// images, and runs the stack until the example workload (uid 1000, no network, only the socket
// directory) has mapped sim0 BAR2 WC, written, read back and exited 0. Then Prometheus, which
// scrapes brokerd, must show brokerd's series in its HTTP API, and the console must reach brokerd
// over the admin socket. Fails (never skips) without podman, runc, docker-compose or debootstrap.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { REPO, run, until } from "../lib/brokerd.js";
import { freePort } from "../observability/support/processes.js";
import { buildBaseImages, must, PODMAN_ENV, podman, requireTools, startPodmanService } from "./support.js";

const PROJECT = `vfio-broker-ci-${process.pid}`;
let env: NodeJS.ProcessEnv = {};
let service: Awaited<ReturnType<typeof startPodmanService>> | undefined;
let promPort = 0;
let adminPort = 0;

function compose(args: string[], timeoutMs = 300_000) {
  return run("docker-compose", ["-f", join(REPO, "docker-compose.yml"), "-p", PROJECT, ...args], {
    env,
    timeoutMs,
  });
}

before(async () => {
  await requireTools("podman", "runc", "docker-compose", "debootstrap", "npm");
  service = await startPodmanService();
  [promPort, adminPort] = [await freePort(), await freePort()];
  env = {
    ...PODMAN_ENV,
    DOCKER_HOST: service.dockerHost,
    // Builds through the API (docker-py), not a docker CLI that may be absent or elsewhere.
    COMPOSE_DOCKER_CLI_BUILD: "0",
    DOCKER_BUILDKIT: "0",
    VFIO_BROKER_PROMETHEUS_PORT: String(promPort),
    VFIO_BROKER_ADMIN_PORT: String(adminPort),
  };
});

after(async () => {
  // docker-compose 1.29 removes the containers in parallel, and podman refuses to remove brokerd
  // while Prometheus still holds its network namespace: a second `down` finishes the job.
  for (let i = 0; service && i < 3; i++) {
    await compose(["down", "-v", "--remove-orphans"], 120_000);
    const left = await podman(["ps", "-aq", "--filter", `label=com.docker.compose.project=${PROJECT}`]);
    if (left.stdout.trim() === "") break;
  }
  await service?.stop();
});

test("docker-compose config -q accepts the file", async (t) => {
  const r = await must("docker-compose config -q", compose(["config", "-q"]));
  assert.equal(r.stderr.trim(), "");
  t.diagnostic(`config -q: ${r.ms} ms`);
});

test("up --build --exit-code-from workload: the workload maps sim0 BAR2 WC, writes, reads back, exits 0", async (t) => {
  const base = await buildBaseImages();
  t.diagnostic(`base images: ${base.ms} ms`);
  const up = await must(
    "docker-compose up --build --exit-code-from workload",
    compose(["up", "--build", "--exit-code-from", "workload"], 900_000),
  );
  t.diagnostic(`compose up --build (to the workload's exit): ${up.ms} ms`);
  assert.match(up.stdout, /workload: ok/);
  // brokerd saw the workload's container through pid: host, and granted it under the compose rule.
  assert.match(up.stdout, /"event":"mapping\.(create|grant)".*"effective":"WC".*"rule":"compose-workload"/);
  assert.match(up.stdout, /"event":"session\.open".*"uid":1000.*"containerId":"[0-9a-f]{64}"/);
});

test("Prometheus shows brokerd's series, and the console reaches brokerd through admin.sock", async (t) => {
  // --exit-code-from stopped the stack with the workload: start it again, map once more.
  await must("docker-compose up -d", compose(["up", "-d", "--no-build", "brokerd", "admin", "prometheus"]));
  const again = await must("docker-compose run workload", compose(["run", "--rm", "workload"]));
  assert.match(again.stdout, /workload: ok/);
  const t0 = Date.now();
  const query = async (q: string) => {
    const res = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = (await res.json()) as {
      data?: { result?: { metric: Record<string, string>; value: [number, string] }[] };
    };
    return body.data?.result ?? [];
  };
  const grants = await until(
    "Prometheus to scrape brokerd's vfio_broker_mapping_grants_total",
    async () => {
      const r = await query('vfio_broker_mapping_grants_total{job="vfio-broker"}');
      return r.some((s) => Number(s.value[1]) >= 1) ? r : undefined;
    },
    60_000,
    500,
  );
  assert.ok(grants);
  t.diagnostic(`Prometheus saw the grant after ${Date.now() - t0} ms: ${JSON.stringify(grants[0]?.metric)}`);
  const up = await query('up{job="vfio-broker"}');
  assert.equal(up[0]?.value[1], "1", JSON.stringify(up));
  const names = (await (await fetch(`http://127.0.0.1:${promPort}/api/v1/label/__name__/values`)).json()) as {
    data: string[];
  };
  assert.ok(names.data.filter((n) => n.startsWith("vfio_broker_")).length > 10, names.data.join(" "));
  const health = await until(
    "the console's /healthz",
    async () => {
      const r = await fetch(`http://127.0.0.1:${adminPort}/healthz`);
      return r.status === 200 ? ((await r.json()) as { admin: string; brokerd: string }) : undefined;
    },
    30_000,
    250,
  );
  assert.ok(health);
  assert.equal(health.admin, "ok");
  assert.ok(health.brokerd, JSON.stringify(health));
});
