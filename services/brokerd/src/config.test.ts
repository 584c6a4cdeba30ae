// brokerd's configuration: defaults, flags over environment over --config, strict flag and file
// keys, tolerant environment (other programs share the VFIO_BROKER_ prefix), clear errors.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { type Config, parseConfig } from "./config.js";

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseConfig(argv, env) as Config;

test("defaults: workload sockets in /run/vfio-broker, brokerd's own in /run/vfio-brokerd, the system policy, loopback metrics, sim devices on", () => {
  const c = parse([]);
  assert.equal(c.workloadDir, "/run/vfio-broker");
  assert.equal(c.privateDir, "/run/vfio-brokerd");
  assert.equal(c.socket, "/run/vfio-broker/broker.sock");
  assert.equal(c.fdSocket, "/run/vfio-broker/fd.sock");
  assert.equal(c.adminSocket, "/run/vfio-brokerd/admin.sock");
  assert.equal(c.stateDir, "/run/vfio-brokerd/state");
  assert.equal(c.policy, "/etc/vfio-broker/policy.yaml");
  assert.equal(c.metrics, "127.0.0.1:9464");
  assert.equal(c.adminGid, -1);
  assert.equal(c.sim, true);
  assert.equal(c.ticketTtlMs, 10_000);
  assert.equal(c.journal, undefined);
});

test("flags win over the environment; the environment fills in; unknown VFIO_BROKER_* variables are ignored", () => {
  const c = parse(["--runtime-dir", "/tmp/x", "--metrics=off", "--no-sim", "--ticket-ttl-ms", "500"], {
    VFIO_BROKER_RUNTIME_DIR: "/tmp/env",
    VFIO_BROKER_POLICY: "/tmp/p.yaml",
    VFIO_BROKER_CONSOLE: "127.0.0.1:8080", // npm start's, not ours
    VFIO_BROKER_DEBUG: "1", // the CLI's
  });
  assert.equal(c.socket, "/tmp/x/broker.sock");
  assert.equal(c.policy, "/tmp/p.yaml");
  assert.equal(c.metrics, "");
  assert.equal(c.sim, false);
  assert.equal(c.ticketTtlMs, 500);
});

test("bad flags say what to do", () => {
  assert.throws(() => parse(["--no-such-thing", "1"]), /unknown option --no-such-thing; see --help/);
  assert.throws(
    () => parse(["--ticket-ttl-ms", "5"]),
    /--ticket-ttl-ms 5: expected an integer from 100 to 3600000/,
  );
  assert.throws(() => parse(["--max-sessions", "lots"]), /expected an integer/);
  // The tenants' reserve: a percent that leaves the shared pool some room, never all of it.
  for (const v of ["-1", "91", "50.5", "half"])
    assert.throws(
      () => parse(["--tenant-reserve", v]),
      new RegExp(`--tenant-reserve ${v}: expected an integer from 0 to 90`),
    );
  assert.equal(parse(["--tenant-reserve", "0"]).tenantReserve, 0);
  // The caps and timers added for hostile clients: zero, negative and absurd values are refused.
  assert.throws(
    () => parse(["--max-fd-connections", "0"]),
    /--max-fd-connections 0: expected an integer from 1/,
  );
  assert.throws(
    () => parse(["--max-pending-mappings", "-5"]),
    /--max-pending-mappings -5: expected an integer/,
  );
  assert.throws(
    () => parse(["--idle-timeout-ms", "10"]),
    /--idle-timeout-ms 10: expected an integer from 100/,
  );
  assert.throws(
    () => parse(["--lease-keepalive-ms", "1e9"]),
    /--lease-keepalive-ms 1e9: expected an integer/,
  );
  // The restart options (issue 10).
  assert.throws(() => parse(["--on-stop", "drop"]), /--on-stop drop: expected "keep" .* or "release"/);
  assert.throws(() => parse(["--resume-grace-ms", "5"]), /--resume-grace-ms 5: expected an integer from 100/);
  assert.equal(parse([]).onStop, "keep");
  assert.equal(parse([]).takeOver, false);
  assert.equal(parse(["--take-over"]).takeOver, true);
  assert.equal(parse(["--runtime-dir", "/x"]).stateDir, "/x.private/state");
  assert.throws(() => parse(["--policy"]), /--policy needs a value/);
  assert.throws(() => parse(["stray"]), /unexpected argument "stray"/);
  assert.throws(() => parse(["--sim-devices", "[oops"]), /--sim-devices \[oops/);
  assert.equal(parseConfig(["--help"], {}), "help");
  assert.throws(
    () => parse(["--admin-gid", "no-such-group-here"]),
    /no such group in \/etc\/group; create it/,
  );
});

test("--runtime-dir DIR is --workload-dir DIR --private-dir DIR.private, per source; the split options win", () => {
  const c = parse(["--runtime-dir", "/r"]);
  assert.deepEqual(
    [c.workloadDir, c.privateDir, c.socket, c.adminSocket],
    ["/r", "/r.private", "/r/broker.sock", "/r.private/admin.sock"],
  );
  const d = parse(["--runtime-dir", "/r", "--private-dir", "/p"]);
  assert.deepEqual([d.workloadDir, d.privateDir], ["/r", "/p"]);
  const e = parse(["--runtime-dir", "/flag"], { VFIO_BROKER_WORKLOAD_DIR: "/env" });
  assert.deepEqual(
    [e.workloadDir, e.privateDir],
    ["/flag", "/flag.private"],
    "a flag wins over the environment",
  );
  const f = parse(["--workload-dir", "/w"]);
  assert.deepEqual(
    [f.workloadDir, f.privateDir, f.stateDir],
    ["/w", "/run/vfio-brokerd", "/run/vfio-brokerd/state"],
  );
});

test("not root: the default directories are under a place only that user can write, never a fixed /tmp name", () => {
  const xdg = parseConfig([], { XDG_RUNTIME_DIR: "/run/user/1000" }, 1000) as Config;
  assert.deepEqual(
    [xdg.workloadDir, xdg.privateDir, xdg.stateDir],
    [
      "/run/user/1000/vfio-broker/run",
      "/run/user/1000/vfio-broker/private",
      "/run/user/1000/vfio-broker/private/state",
    ],
  );
  const tmp = parseConfig([], {}, 1000) as Config;
  assert.deepEqual(
    [tmp.workloadDir, tmp.privateDir],
    ["/tmp/vfio-broker-1000/run", "/tmp/vfio-broker-1000/private"],
  );
  assert.equal((parseConfig(["--workload-dir", "/w"], {}, 1000) as Config).workloadDir, "/w");
  assert.equal(
    (parseConfig([], { XDG_RUNTIME_DIR: "/run/user/0" }, 0) as Config).workloadDir,
    "/run/vfio-broker",
  );
});

test("--admin-gid takes a gid or a group name", () => {
  assert.equal(parse(["--admin-gid", "4242"]).adminGid, 4242);
  assert.equal(parse(["--admin-gid", "root"]).adminGid, 0);
});

test("--config: a JSON file with the same keys in camelCase, checked strictly", () => {
  const dir = mkdtempSync(join(tmpdir(), "brokerd-config-"));
  try {
    const good = join(dir, "good.json");
    writeFileSync(
      good,
      JSON.stringify({ runtimeDir: "/tmp/cfg", maxSessions: 7, simDevices: [{ id: "x", regions: [] }] }),
    );
    const c = parse(["--config", good, "--max-sessions", "9"]);
    assert.equal(c.socket, "/tmp/cfg/broker.sock");
    assert.equal(c.maxSessions, 9, "a flag wins over the file");
    assert.deepEqual(c.simDevices, [{ id: "x", regions: [] }]);
    const typo = join(dir, "typo.json");
    writeFileSync(typo, JSON.stringify({ maxSesions: 7 }));
    assert.throws(() => parse(["--config", typo]), /unknown option --max-sesions/);
    assert.throws(() => parse(["--config", join(dir, "missing.json")]), /--config .*missing\.json: ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
