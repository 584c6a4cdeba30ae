// `npm start`: runs brokerd on its built-in simulated devices with the sim-local policy, plus the
// admin REST API and console, in the foreground. Ctrl-C stops both. Prints where everything is.
// `npm start -- ARGS...` passes ARGS on to brokerd, after its own (e.g. `--max-sessions 4096`).
// As root: workload sockets in /run/vfio-broker, brokerd's own (admin.sock, handover.sock, lock,
// state) in /run/vfio-brokerd, the policy copy, journal and console token in /var/lib/vfio-broker.
// Otherwise all of it under one directory only this user can write: $XDG_RUNTIME_DIR/vfio-broker,
// or /tmp/vfio-broker-<uid> (created here 0711; if another uid made it first, this refuses):
// run/ for the workload sockets, private/ for the rest (policy copy, journal, token too). Every
// directory is checked as brokerd checks its own (native/src/dir-rule.ts), before anything is
// written in it, and files are written only through the checked directory, never through a link.
import { spawn } from "node:child_process";
import { closeSync, constants, existsSync, fchmodSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const brokerd = join(root, "services/brokerd/dist/main.js");
const admin = join(root, "services/admin/dist/main.js");
if (!existsSync(brokerd)) {
  console.error("start: brokerd is not built; run `npm ci` (or `npm run build`) first");
  process.exit(1);
}
const { openSafeDir, openInSafeDir, UnsafePlaceError } = await import(join(root, "native/dist/index.js"));

const uid = process.geteuid?.() ?? 0;
const isRoot = uid === 0;

/** This user's base directory when not root (see the top of the file). */
function userBase() {
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (xdg) {
    try {
      openSafeDir(xdg, { role: "$XDG_RUNTIME_DIR" }).close();
      return join(xdg, "vfio-broker");
    } catch (e) {
      if (!(e instanceof UnsafePlaceError)) throw e;
      console.error(`start: not using ${e.message}`);
    }
  }
  return `/tmp/vfio-broker-${uid}`;
}

let workloadDir;
let privateDir;
let runtimeArgs;
let stateDir;
try {
  if (process.env.VFIO_BROKER_RUNTIME_DIR) {
    // brokerd's shorthand: workload dir DIR, private dir DIR.private.
    workloadDir = process.env.VFIO_BROKER_RUNTIME_DIR;
    privateDir = `${workloadDir}.private`;
  } else if (isRoot) {
    workloadDir = "/run/vfio-broker";
    privateDir = "/run/vfio-brokerd";
  } else {
    const base = userBase();
    openSafeDir(base, { role: "the vfio-broker directory", create: 0o711 }).close();
    workloadDir = join(base, "run");
    privateDir = join(base, "private");
  }
  runtimeArgs = ["--workload-dir", workloadDir, "--private-dir", privateDir];
  // Checked (and made) here too, so that a refusal stops everything before anything is written.
  openSafeDir(workloadDir, { role: "the workload directory", create: 0o755 }).close();
  openSafeDir(privateDir, { role: "brokerd's private directory", create: 0o700 }).close();
  stateDir =
    process.env.STATE_DIRECTORY ??
    (isRoot && !process.env.VFIO_BROKER_RUNTIME_DIR ? "/var/lib/vfio-broker" : privateDir);
  // brokerd refuses a policy file its group or others may write (a checkout made with umask 002
  // has such files), so it runs on a copy in the state dir, owner-writable only. Edit that copy and
  // send brokerd SIGHUP to reload it.
  const state = openSafeDir(stateDir, { role: "the console's state directory", create: 0o700 });
  if (!process.env.VFIO_BROKER_POLICY) {
    const fd = openInSafeDir(
      state,
      "policy.yaml",
      constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC,
      0o644,
    );
    try {
      writeSync(fd, readFileSync(join(root, "deploy/policy/sim-local.yaml")));
      fchmodSync(fd, 0o644);
    } finally {
      closeSync(fd);
    }
  }
  state.close();
} catch (e) {
  if (!(e instanceof UnsafePlaceError)) throw e;
  console.error(`start: refusing to start: ${e.message}`);
  process.exit(2);
}
const policy = process.env.VFIO_BROKER_POLICY ?? join(stateDir, "policy.yaml");
const journal = join(stateDir, "journal.jsonl");
const tokenFile = join(stateDir, "admin-token");

const children = [];
function run(name, args, env = {}) {
  const child = spawn(process.execPath, args, {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, ...env },
  });
  child.on("exit", (code, sig) => {
    console.error(`start: ${name} exited (${sig ?? code})`);
    for (const c of children) if (c !== child) c.kill("SIGTERM");
    process.exitCode = code ?? 1;
  });
  children.push(child);
  return child;
}

const brokerdArgs = [
  ...runtimeArgs,
  "--policy",
  policy,
  "--metrics",
  process.env.VFIO_BROKER_METRICS ?? "127.0.0.1:9464",
  "--journal",
  journal,
  ...process.argv.slice(2),
];
// As the unit and the image run it: V8's young generation at 2 MiB per semi-space (README, BENCHMARKS.md).
const brokerdChild = run("brokerd", ["--max-semi-space-size=2", brokerd, ...brokerdArgs]);
if (existsSync(admin)) {
  // Give brokerd a moment to create its sockets; the console reports 503 until it can reach them.
  setTimeout(
    () =>
      brokerdChild.exitCode === null &&
      brokerdChild.signalCode === null &&
      run("admin console", [
        admin,
        "--admin-socket",
        join(privateDir, "admin.sock"),
        "--listen",
        process.env.VFIO_BROKER_CONSOLE ?? "127.0.0.1:8080",
        "--token-file",
        tokenFile,
      ]),
    500,
  );
}
// What brokerd will use, by brokerd's own parser (its options, environment and defaults);
// undefined if it refuses them (brokerd then says why itself and exits).
const { parseConfig } = await import(join(root, "services/brokerd/dist/config.js"));
const shown = (() => {
  try {
    const c = parseConfig(brokerdArgs);
    return c === "help" ? undefined : c;
  } catch {
    return undefined;
  }
})();
const metricsUrl = shown?.metrics === "" ? "off" : `http://${shown?.metrics ?? "?"}/metrics`;
console.error(
  `start: workload sockets (broker.sock, fd.sock) in ${workloadDir}: the directory to give workloads\n` +
    `start: brokerd's own (admin.sock, handover.sock, brokerd.lock) in ${privateDir}; its state in ${shown?.stateDir ?? "?"}\n` +
    `start: policy ${shown?.policy ?? policy} (edit it, then kill -HUP brokerd to reload); journal ${shown ? (shown.journal ?? "off") : journal}\n` +
    `start: metrics ${metricsUrl}; console http://${process.env.VFIO_BROKER_CONSOLE ?? "127.0.0.1:8080"}/ (token in ${tokenFile})\n` +
    `start: try  VFIO_BROKER_SOCKET=${join(workloadDir, "broker.sock")} node clients/node/dist/cli.js devices`,
);
for (const sig of ["SIGINT", "SIGTERM"])
  process.on(sig, () => {
    for (const c of children) c.kill("SIGTERM");
  });
