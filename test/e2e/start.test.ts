// The README's first command ends in `npm start`: scripts/start.mjs must bring up brokerd on its
// simulated devices and the admin console, answer the CLI, and take both down on SIGTERM.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { it } from "node:test";
import { CLI, REPO, run, startBrokerd, tempDir, until } from "../lib/brokerd.js";

it("npm start: brokerd + console come up, the CLI sees sim0 and sim1, SIGTERM stops both", async () => {
  const home = tempDir("vfio-broker-start-");
  const dir = join(home, "run");
  // `npm start -- ARGS` passes ARGS on to brokerd: its ready line shows the cap they set, and the
  // banner names the state directory they chose.
  const stateDir = join(home, "grants");
  const args = [join(REPO, "scripts/start.mjs"), "--max-sessions", "77", "--state-dir", stateDir];
  const proc = spawn(process.execPath, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      VFIO_BROKER_RUNTIME_DIR: dir,
      STATE_DIRECTORY: join(home, "state"),
      VFIO_BROKER_METRICS: "127.0.0.1:0",
      VFIO_BROKER_CONSOLE: "127.0.0.1:0",
    },
  });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  try {
    await until(
      "brokerd and the console to be ready",
      () => (out.match(/"event":"ready"/g) ?? []).length >= 2,
      20_000,
    );
    assert.match(out, /"caps":\{[^}]*"sessions":77[,}]/, out);
    assert.ok(out.includes(`its state in ${stateDir}\n`), out);
    assert.ok(
      readdirSync(stateDir).some((f) => f.startsWith("state.")),
      `no state store in ${stateDir}`,
    );
    const devices = await run(process.execPath, [
      CLI,
      "devices",
      "--json",
      "--socket",
      join(dir, "broker.sock"),
    ]);
    assert.equal(devices.code, 0, devices.stderr);
    assert.deepEqual(
      JSON.parse(devices.stdout).devices.map((d: { id: string }) => d.id),
      ["sim0", "sim1"],
    );
    // It runs on an owner-writable copy of the sim policy, and made the console's token file 0600.
    assert.equal(statSync(join(home, "state", "policy.yaml")).mode & 0o777, 0o644);
    assert.equal(statSync(join(home, "state", "admin-token")).mode & 0o777, 0o600);
    // The workload dir holds the two workload sockets and nothing else; the rest is private.
    assert.deepEqual(readdirSync(dir).sort(), ["broker.sock", "fd.sock"]);
    assert.equal(statSync(`${dir}.private`).mode & 0o777, 0o700);
  } finally {
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    await exited;
    rmSync(home, { recursive: true, force: true });
  }
  // start.mjs exits only after both children did, each cleanly.
  assert.match(out, /start: brokerd exited \(0\)/, out);
  assert.match(out, /start: admin console exited \(0\)/, out);
  assert.doesNotMatch(out, /Error/, out);
});

it("a SIGHUP the moment brokerd says it is ready reloads the policy; it never ends brokerd", {
  timeout: 120_000,
}, async () => {
  // The reload handler used to be installed just after the "ready" line: a logrotate (or an
  // operator) fast enough found SIGHUP's default action, which ends the process (half the time).
  for (let i = 0; i < 8; i++) {
    const b = await startBrokerd();
    try {
      b.proc.kill("SIGHUP");
      await until("the policy.reload journal line", () =>
        readFileSync(b.journal, "utf8").includes('"event":"policy.reload"') ? true : undefined,
      );
      assert.equal(b.proc.signalCode, null, `round ${i}: brokerd was ended by ${b.proc.signalCode}`);
    } finally {
      await b.stop();
    }
  }
});
