// deploy/systemd: the units pass `systemd-analyze verify`, and the options their ExecStart lines
// give brokerd and the console are ones those programs accept (so units and code cannot drift).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parseConfig } from "@vfio-broker/brokerd/config";
import { REPO, run } from "../lib/brokerd.js";

const UNITS = join(REPO, "deploy/systemd");

/** ExecStart= of a unit, continuation lines joined, split into words. */
function execStart(unit: string): string[] {
  const text = readFileSync(join(UNITS, unit), "utf8").replace(/\\\n\s*/g, " ");
  const line = text.split("\n").find((l) => l.startsWith("ExecStart="));
  assert.ok(line, `${unit} has an ExecStart`);
  return line.slice("ExecStart=".length).trim().split(/\s+/);
}

test("systemd-analyze verify accepts both units", async () => {
  const r = await run("systemd-analyze", [
    "verify",
    "--man=no",
    join(UNITS, "vfio-brokerd.service"),
    join(UNITS, "vfio-broker-admin.service"),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr.trim(), "");
});

test("brokerd's unit starts the built daemon with options brokerd accepts", () => {
  const [node, script, ...args] = execStart("vfio-brokerd.service");
  assert.equal(node, "/usr/bin/node");
  assert.equal(script, "/opt/vfio-broker/services/brokerd/dist/main.js");
  // The admin group is created at install time (sysusers.d); everything else must parse as is.
  const i = args.indexOf("--admin-gid");
  assert.equal(args[i + 1], "vfio-broker-admin");
  assert.match(readFileSync(join(UNITS, "sysusers.d/vfio-broker.conf"), "utf8"), /^g vfio-broker-admin -$/m);
  const config = parseConfig([...args.slice(0, i), "--admin-gid", "0", ...args.slice(i + 2)], {});
  assert.notEqual(config, "help");
  if (config === "help") return;
  assert.equal(config.socket, "/run/vfio-broker/broker.sock");
  assert.equal(config.policy, "/etc/vfio-broker/policy.yaml");
});

test("the console's unit points at the admin socket brokerd's unit creates", async () => {
  const [, script, ...args] = execStart("vfio-broker-admin.service");
  assert.equal(script, "/opt/vfio-broker/services/admin/dist/main.js");
  assert.equal(args[args.indexOf("--admin-socket") + 1], "/run/vfio-broker/admin.sock");
  // The console accepts these flags: --help lists every one of them.
  const help = await run(process.execPath, [join(REPO, "services/admin/dist/main.js"), "--help"]);
  for (const flag of args.filter((a) => a.startsWith("--")))
    assert.match(help.stdout + help.stderr, new RegExp(flag));
});
