// `npm start`: runs brokerd on its built-in simulated devices with the sim-local policy, plus the
// admin REST API and console, in the foreground. Ctrl-C stops both.
// As root the sockets go to /run/vfio-broker; otherwise to $XDG_RUNTIME_DIR/vfio-broker (or /tmp).
import { spawn } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const isRoot = process.getuid?.() === 0;
const runtimeDir =
  process.env.VFIO_BROKER_RUNTIME_DIR ??
  (isRoot ? "/run/vfio-broker" : join(process.env.XDG_RUNTIME_DIR ?? "/tmp", "vfio-broker"));
const stateDir = process.env.STATE_DIRECTORY ?? (isRoot ? "/var/lib/vfio-broker" : join(runtimeDir, "state"));
mkdirSync(runtimeDir, { recursive: true });
mkdirSync(stateDir, { recursive: true });

const brokerd = join(root, "services/brokerd/dist/main.js");
const admin = join(root, "services/admin/dist/main.js");
if (!existsSync(brokerd)) {
  console.error("start: brokerd is not built; run `npm ci` (or `npm run build`) first");
  process.exit(1);
}
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

// brokerd refuses a policy file its group or others may write (a checkout made with umask 002
// has such files), so it runs on a copy in the state dir, owner-writable only. Edit that copy and
// send brokerd SIGHUP to reload it.
let policy = process.env.VFIO_BROKER_POLICY;
if (!policy) {
  policy = join(stateDir, "policy.yaml");
  copyFileSync(join(root, "deploy/policy/sim-local.yaml"), policy);
  chmodSync(policy, 0o644);
}
run("brokerd", [
  brokerd,
  "--runtime-dir",
  runtimeDir,
  "--policy",
  policy,
  "--metrics",
  process.env.VFIO_BROKER_METRICS ?? "127.0.0.1:9464",
  "--journal",
  join(stateDir, "journal.jsonl"),
]);
if (existsSync(admin)) {
  // Give brokerd a moment to create its sockets; the console reports 503 until it can reach them.
  setTimeout(
    () =>
      run("admin console", [
        admin,
        "--admin-socket",
        join(runtimeDir, "admin.sock"),
        "--listen",
        process.env.VFIO_BROKER_CONSOLE ?? "127.0.0.1:8080",
        "--token-file",
        join(stateDir, "admin-token"),
      ]),
    500,
  );
}
console.error(
  `start: policy ${policy} (edit it, then kill -HUP brokerd to reload)\n` +
    `start: brokerd sockets in ${runtimeDir}; metrics http://127.0.0.1:9464/metrics; console http://127.0.0.1:8080/ (token in ${join(stateDir, "admin-token")})\n` +
    `start: try  VFIO_BROKER_SOCKET=${join(runtimeDir, "broker.sock")} node clients/node/dist/cli.js devices`,
);
for (const sig of ["SIGINT", "SIGTERM"])
  process.on(sig, () => {
    for (const c of children) c.kill("SIGTERM");
  });
