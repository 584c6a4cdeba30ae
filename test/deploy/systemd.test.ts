// deploy/systemd: the units pass `systemd-analyze verify`, and the options their ExecStart lines
// give brokerd and the console are ones those programs accept (so units and code cannot drift).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, copyFileSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parseConfig } from "@vfio-broker/brokerd/config";
import { BROKERD, REPO, run, SIM_POLICY, tempDir } from "../lib/brokerd.js";

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
  assert.equal(config.adminSocket, "/run/vfio-brokerd/admin.sock");
  assert.equal(config.stateDir, "/var/lib/vfio-broker/state");
  assert.equal(config.policy, "/etc/vfio-broker/policy.yaml");
});

/** The KEY=VALUE lines of an EnvironmentFile (commented ones too, uncommented, when all). */
function envFile(text: string, all = false): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = all ? raw.replace(/^#(?=[A-Z_]+=)/, "") : raw;
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

test("brokerd's unit serves real devices only, named in its EnvironmentFile as the example shows", () => {
  const unit = readFileSync(join(UNITS, "vfio-brokerd.service"), "utf8");
  const [, , ...args] = execStart("vfio-brokerd.service");
  assert.ok(args.includes("--no-sim"), "the unit passes --no-sim");
  assert.match(unit, /^EnvironmentFile=-\/etc\/vfio-broker\/brokerd\.env$/m);
  const example = readFileSync(join(UNITS, "brokerd.env.example"), "utf8");
  const gid = args.indexOf("--admin-gid");
  const unitArgs = [...args.slice(0, gid), "--admin-gid", "0", ...args.slice(gid + 2)];
  // As shipped (every line commented): no device at all, and no sim.
  assert.deepEqual(envFile(example), {});
  const bare = parseConfig(unitArgs, envFile(example));
  assert.ok(bare !== "help" && !bare.sim && bare.sysfs.length === 0 && bare.vfio.length === 0);
  // Every variable the example documents is one brokerd reads (it ignores unknown VFIO_BROKER_*).
  const filled = envFile(example, true);
  assert.deepEqual(Object.keys(filled).sort(), [
    "VFIO_BROKER_PCI",
    "VFIO_BROKER_SYSFS",
    "VFIO_BROKER_VFIO",
    "VFIO_BROKER_VFIO_BIND",
  ]);
  const c = parseConfig(unitArgs, filled);
  if (c === "help") return assert.fail("parseConfig said help");
  assert.equal(c.sim, false);
  // --pci and the older --sysfs / --vfio together: each function once, in its mode.
  const modeOf = Object.fromEntries(filled.VFIO_BROKER_PCI!.split(",").map((p) => p.split("=")));
  assert.deepEqual(modeOf, { "0000:3b:00.1": "sysfs-wc", "0000:3b:00.0": "vfio" });
  assert.deepEqual([...c.sysfs].sort(), [filled.VFIO_BROKER_SYSFS]);
  assert.deepEqual([...c.vfio].sort(), filled.VFIO_BROKER_VFIO!.split(",").sort());
  assert.equal(c.vfioBind, true);
});

test("brokerd started with the unit's command line serves no simulated device", {
  timeout: 60_000,
}, async () => {
  const dir = tempDir("vfio-broker-unit-");
  try {
    const policy = join(dir, "policy.yaml");
    copyFileSync(SIM_POLICY, policy);
    chmodSync(policy, 0o600);
    // The unit's own arguments, with its host paths moved to a temp dir (later flags win).
    const [, , ...args] = execStart("vfio-brokerd.service");
    const gid = args.indexOf("--admin-gid");
    const argv = [
      BROKERD,
      ...args.slice(0, gid),
      ...args.slice(gid + 2),
      ...[
        "--runtime-dir",
        dir,
        "--policy",
        policy,
        "--metrics",
        "off",
        "--journal",
        join(dir, "journal.jsonl"),
      ],
    ];
    const env = { ...process.env, ...envFile(readFileSync(join(UNITS, "brokerd.env.example"), "utf8")) };
    const proc = spawn(process.execPath, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    proc.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    type Caps = { nofile: number; sessions: number; fdConnections: number; clientFds: number };
    const ready = await new Promise<{ devices: string[]; caps: Caps }>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`brokerd was not ready in 30 s:\n${err}`)), 30_000);
      proc.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const line = out.split("\n").find((l) => l.includes('"event":"ready"'));
        if (line) {
          clearTimeout(t);
          resolve(JSON.parse(line));
        }
      });
      proc.once("exit", (code) => {
        clearTimeout(t);
        reject(new Error(`brokerd exited ${code}:\n${err}`));
      });
    });
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    await exited;
    assert.deepEqual(ready.devices, [], "no sim0/sim1 on a production host");
    assert.match(err, /no device to serve .*brokerd\.env/);
    // The ready line says the client caps it fitted under its RLIMIT_NOFILE (512 kept for operators).
    const { caps } = ready;
    assert.ok(caps.nofile >= 1024 && caps.sessions >= 1 && caps.fdConnections >= 1, JSON.stringify(caps));
    assert.ok(caps.clientFds + 512 <= caps.nofile, JSON.stringify(caps));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the console's unit points at the admin socket brokerd's unit creates", async () => {
  const [, script, ...args] = execStart("vfio-broker-admin.service");
  assert.equal(script, "/opt/vfio-broker/services/admin/dist/main.js");
  assert.equal(args[args.indexOf("--admin-socket") + 1], "/run/vfio-brokerd/admin.sock");
  // The console accepts these flags: --help lists every one of them.
  const help = await run(process.execPath, [join(REPO, "services/admin/dist/main.js"), "--help"]);
  for (const flag of args.filter((a) => a.startsWith("--")))
    assert.match(help.stdout + help.stderr, new RegExp(flag));
});

// The hardening budget: brokerd at most 3.5 (it must stay root with CAP_CHOWN, CAP_SYS_ADMIN,
// CAP_SYS_RAWIO, CAP_KILL and CAP_SYS_RESOURCE, reach /dev/vfio and write /sys), the console at most 2.0. `--threshold` is on
// systemd-analyze's 0..100 scale (the printed score times ten); exit status 1 means over budget.
for (const [unit, threshold] of [
  ["vfio-brokerd.service", 35],
  ["vfio-broker-admin.service", 20],
] as const) {
  test(`systemd-analyze security scores ${unit} at most ${threshold / 10}`, async () => {
    const r = await run("systemd-analyze", [
      "security",
      "--offline=yes",
      `--threshold=${threshold}`,
      "--no-pager",
      join(UNITS, unit),
    ]);
    const score = /Overall exposure level for \S+: (\d+\.\d)/.exec(r.stdout)?.[1];
    assert.ok(score, `no score in:\n${r.stdout}${r.stderr}`);
    assert.equal(r.code, 0, `${unit} scores ${score}, over ${threshold / 10}:\n${r.stdout}`);
    assert.ok(Number(score) <= threshold / 10, `${unit} scores ${score}`);
  });
}

test("brokerd's unit keeps what brokerd needs: /dev/vfio, writable /sys, its directories, the fdstore", () => {
  const text = readFileSync(join(UNITS, "vfio-brokerd.service"), "utf8");
  const set = (key: string) => [...text.matchAll(new RegExp(`^${key}=(.*)$`, "gm"))].map((m) => m[1]!.trim());
  // PrivateDevices= would hide /dev/vfio; ProtectKernelTunables= would make driver_override read-only.
  assert.deepEqual(set("PrivateDevices"), []);
  assert.deepEqual(set("ProtectKernelTunables"), ["no"]);
  assert.ok(set("DeviceAllow").includes("char-vfio rw"));
  assert.ok(set("DeviceAllow").includes("/dev/iommu rw"));
  // The vfio backend also opens the legacy container, a misc device only its path names.
  assert.ok(set("DeviceAllow").includes("/dev/vfio/vfio rw"));
  assert.ok(set("DeviceAllow").includes("char-vfio-dev rw"));
  // No user namespace and no hidepid: client /proc/<pid>/cgroup must stay readable.
  assert.deepEqual(set("PrivateUsers"), []);
  assert.deepEqual(set("ProtectProc"), []);
  assert.deepEqual(set("User"), []);
  assert.deepEqual(set("MemoryDenyWriteExecute"), []);
  // The workload dir and brokerd's private one (ProtectSystem=strict leaves nothing else writable).
  assert.deepEqual(set("RuntimeDirectory"), ["vfio-broker vfio-brokerd"]);
  assert.deepEqual(set("StateDirectory"), ["vfio-broker"]);
  assert.deepEqual(set("LogsDirectory"), ["vfio-broker"]);
  assert.ok(Number(set("FileDescriptorStoreMax")[0]) > 0);
  const caps = set("CapabilityBoundingSet")[0]!.split(/\s+/);
  assert.deepEqual(caps.sort(), [
    "CAP_CHOWN",
    "CAP_KILL",
    "CAP_SYS_ADMIN",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
  ]);
  assert.deepEqual(set("SystemCallErrorNumber"), ["EPERM"]);
});
