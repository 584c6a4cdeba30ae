// Issue 18 row 13: another process of brokerd's uid (root) holds 30,000 fds in flight on a
// socketpair nobody reads. The kernel counts in-flight fds per user and fails every later
// SCM_RIGHTS send of that user with ETOOMANYREFS once the count exceeds the sender's RLIMIT_NOFILE,
// unless the sender has CAP_SYS_RESOURCE or CAP_SYS_ADMIN.
//   (a) brokerd with the capabilities the shipped compose file / DaemonSet keep, minus
//       CAP_SYS_RESOURCE: every victim delivery fails, and says so (FD_STATUS_UNDELIVERABLE naming
//       ETOOMANYREFS, counted in vfio_broker_fd_delivery_failures_total{errno}), never "brokerd
//       restarted"; the victim's session survives and the grant is given back.
//   (b) brokerd with exactly the capabilities each shipped deployment keeps (read from
//       docker-compose.yml, the DaemonSet and the systemd unit): the victim keeps 100 %.
// brokerd runs under setpriv (bounding set = those capabilities; as root that is its effective
// set) and prlimit (RLIMIT_NOFILE 4096, so 30,000 in flight is well past it). A machine whose own
// bounding set lacks CAP_SYS_RESOURCE (some sandboxed VMs) cannot give it to brokerd: there (b)
// runs with CAP_SYS_ADMIN in its place, the kernel's other exemption, and its figures say so.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { type BrokerProcess, CLI, REPO, type RunResult, run, startBrokerd } from "../lib/brokerd.js";
import { freePort } from "./journal-support.js";
import { assertAlive, report, type Spawned, spawnAs, startVictim, VICTIM } from "./support/harness.js";

const AGENTS = join(dirname(fileURLToPath(import.meta.url)), "agents");
const IN_FLIGHT = 30_000;
const NOFILE = 4096;
const ATTACK_MS = 4000;

/** "CAP_SYS_RESOURCE" / "SYS_RESOURCE" -> "sys_resource" (setpriv's spelling). */
const norm = (c: string) => c.trim().toLowerCase().replace(/^cap_/, "");

/** The capabilities each shipped deployment gives brokerd, from the files themselves. */
function shippedCapabilities(): { compose: string[]; kubernetes: string[]; systemd: string[] } {
  const compose = parse(readFileSync(join(REPO, "docker-compose.yml"), "utf8"));
  const ds = parse(readFileSync(join(REPO, "deploy/kubernetes/brokerd-daemonset.yaml"), "utf8"));
  const container = ds.spec.template.spec.containers.find((c: { name: string }) => c.name === "brokerd");
  const unit = readFileSync(join(REPO, "deploy/systemd/vfio-brokerd.service"), "utf8");
  const bounding = /^CapabilityBoundingSet=(.*)$/m.exec(unit)?.[1] ?? "";
  assert.deepEqual(compose.services.brokerd.cap_drop, ["ALL"]);
  assert.deepEqual(container.securityContext.capabilities.drop, ["ALL"]);
  return {
    compose: (compose.services.brokerd.cap_add as string[]).map(norm).sort(),
    kubernetes: (container.securityContext.capabilities.add as string[]).map(norm).sort(),
    systemd: bounding.split(/\s+/).filter(Boolean).map(norm).sort(),
  };
}

function holdInFlight(count: number): {
  held: Promise<{ inflight: number }>;
  stop(): Promise<void>;
  s: Spawned;
} {
  const s = spawnAs(0, [join(AGENTS, "fd-inflight.js"), String(count)]);
  const held = new Promise<{ inflight: number }>((resolve, reject) => {
    const check = () => {
      const line = s
        .out()
        .split("\n")
        .find((l) => l.includes('"phase":"holding"'));
      if (line) return resolve(JSON.parse(line));
      if (s.child.exitCode !== null) return reject(new Error(`the attacker exited: ${s.err()}`));
      setTimeout(check, 20);
    };
    check();
  });
  return {
    s,
    held,
    async stop() {
      if (s.child.exitCode === null) s.child.kill("SIGTERM");
      await s.exited;
    },
  };
}

async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  return r.text();
}

function series(text: string, name: string, labels = ""): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ""} `));
  return line ? Number(line.split(" ").pop()) : Number.NaN;
}

interface Run {
  caps: string[];
  victim: Awaited<ReturnType<ReturnType<typeof startVictim>["stop"]>>;
  inflight: number;
  metrics: string;
  stderr: string;
  b: BrokerProcess;
  cli: RunResult;
}

const started: BrokerProcess[] = [];
after(async () => {
  for (const b of started) await b.stop();
});

async function attackWith(caps: string[]): Promise<Run> {
  const port = await freePort();
  const b = await startBrokerd({
    args: ["--metrics", `127.0.0.1:${port}`],
    wrap: [
      "setpriv",
      `--bounding-set=-all${caps.map((c) => `,+${c}`).join("")}`,
      "--",
      "prlimit",
      `--nofile=${NOFILE}:${NOFILE}`,
      "--",
    ],
  });
  started.push(b);
  const attack = holdInFlight(IN_FLIGHT);
  try {
    const { inflight } = await attack.held;
    const victim = startVictim(b);
    await new Promise((r) => setTimeout(r, ATTACK_MS));
    // What a person sees: the CLI, as the victim's uid, maps once.
    const cli = await run(
      process.execPath,
      [CLI, "map", "sim0", "BAR2", "--length", "4K", "--attr", "wc", "--read", "0:8"],
      { uid: VICTIM, env: { VFIO_BROKER_SOCKET: b.socket } },
    );
    const v = await victim.stop();
    assertAlive(b);
    const metrics = await scrape(port);
    return { caps, victim: v, inflight, metrics, stderr: b.stderr(), b, cli };
  } finally {
    await attack.stop();
  }
}

/** Capabilities this machine can grant at all (its own bounding set). */
function machineHas(cap: number): boolean {
  const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
  return m ? ((BigInt(`0x${m[1]}`) >> BigInt(cap)) & 1n) === 1n : false;
}
const CAP_SYS_RESOURCE = 24;

describe("hostile: fds in flight of brokerd's uid (issue 18 row 13)", { timeout: 180_000 }, () => {
  const shipped = shippedCapabilities();

  it("(a) without CAP_SYS_RESOURCE: deliveries fail as ETOOMANYREFS, said and counted, the session survives", async () => {
    const caps = shipped.compose.filter((c) => c !== "sys_resource" && c !== "sys_admin");
    const r = await attackWith(caps);
    const failures = series(r.metrics, "vfio_broker_fd_delivery_failures_total", 'errno="ETOOMANYREFS"');
    const givenBack = series(
      r.metrics,
      "vfio_broker_mapping_releases_total",
      'device="sim0",reason="undeliverable"',
    );
    report("fd in flight (a) caps without CAP_SYS_RESOURCE", {
      caps,
      inflight: r.inflight,
      nofile: NOFILE,
      victim: `${r.victim.ok}/${r.victim.attempts}`,
      errors: r.victim.errors,
      failuresETOOMANYREFS: failures,
      releasedUndeliverable: givenBack,
      exemptGauge: series(r.metrics, "vfio_broker_fd_inflight_limit_exempt"),
      cli: `exit ${r.cli.code}: ${r.cli.stderr.trim()}`,
    });
    assert.ok(r.inflight >= IN_FLIGHT, `the attacker held ${r.inflight} fds in flight`);
    assert.equal(r.cli.code, 1, r.cli.stdout + r.cli.stderr);
    assert.match(r.cli.stderr, /ETOOMANYREFS.*CAP_SYS_RESOURCE.*\(UNDELIVERABLE\)/s);
    assert.match(r.stderr, /neither CAP_SYS_RESOURCE nor CAP_SYS_ADMIN/, "brokerd warned at start");
    assert.equal(series(r.metrics, "vfio_broker_fd_inflight_limit_exempt"), 0);
    assert.ok(r.victim.attempts >= 5);
    assert.ok(r.victim.ok < r.victim.attempts, "the attack had an effect");
    for (const e of r.victim.errors) {
      assert.match(e, /ETOOMANYREFS/, `the victim is told what happened: ${e}`);
      assert.doesNotMatch(e, /restarted|no longer has session/);
    }
    assert.ok(failures >= r.victim.failures, `${failures} counted, ${r.victim.failures} failed`);
    assert.ok(givenBack >= r.victim.failures, `${givenBack} grants given back`);
  });

  // One run per distinct shipped set (compose and the DaemonSet keep the same one).
  const sets = new Map<string, string[]>();
  for (const [where, caps] of Object.entries(shipped))
    sets.set(caps.join(","), [...(sets.get(caps.join(",")) ?? []), where]);
  for (const [key, where] of sets) {
    it(`(b) with the shipped capabilities of ${where.join(" and ")}: the victim keeps 100 %`, async () => {
      const shippedCaps = key.split(",").filter(Boolean);
      assert.ok(
        shippedCaps.includes("sys_resource") || shippedCaps.includes("sys_admin"),
        `${where.join(", ")} must keep CAP_SYS_RESOURCE (or CAP_SYS_ADMIN): ${shippedCaps.join(", ")}`,
      );
      const substituted = !machineHas(CAP_SYS_RESOURCE) && shippedCaps.includes("sys_resource");
      const caps = substituted
        ? [...new Set(shippedCaps.map((c) => (c === "sys_resource" ? "sys_admin" : c)))]
        : shippedCaps;
      const r = await attackWith(caps);
      const failures = series(r.metrics, "vfio_broker_fd_delivery_failures_total", 'errno="ETOOMANYREFS"');
      report(`fd in flight (b) shipped caps of ${where.join("+")}`, {
        caps,
        ...(substituted
          ? { substituted: "sys_admin for sys_resource (not in this machine's bounding set)" }
          : {}),
        inflight: r.inflight,
        nofile: NOFILE,
        victim: `${r.victim.ok}/${r.victim.attempts}`,
        errors: r.victim.errors,
        failuresETOOMANYREFS: failures,
        exemptGauge: series(r.metrics, "vfio_broker_fd_inflight_limit_exempt"),
      });
      assert.ok(r.inflight >= IN_FLIGHT, `the attacker held ${r.inflight} fds in flight`);
      assert.doesNotMatch(r.stderr, /neither CAP_SYS_RESOURCE nor CAP_SYS_ADMIN/);
      assert.equal(series(r.metrics, "vfio_broker_fd_inflight_limit_exempt"), 1);
      assert.equal(failures, 0);
      assert.ok(r.victim.attempts >= 5);
      assert.equal(r.victim.ok, r.victim.attempts, r.victim.errors.join("; "));
      assert.equal(r.cli.code, 0, r.cli.stderr);
    });
  }
});
