// brokerd's configuration: command-line flags (and VFIO_BROKER_* environment variables), with an
// optional JSON file for the same keys. Validated up front with messages that say what to fix.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { SimDeviceSpec } from "./devices/sim.js";
import { invalid } from "./errors.js";
import { pciModes } from "./pci-modes.js";

export interface Config {
  /** broker.sock and fd.sock, nothing else: the directory workloads and containers mount. */
  workloadDir: string;
  /** admin.sock, handover.sock and brokerd.lock: brokerd's own, never inside the workload dir. */
  privateDir: string;
  socket: string;
  fdSocket: string;
  adminSocket: string;
  policy: string;
  /** host:port for /metrics, or "" for off. */
  metrics: string;
  /** gid allowed on the admin socket besides root (-1: root only). */
  adminGid: number;
  sim: boolean;
  simDevices: SimDeviceSpec[] | undefined;
  ticketTtlMs: number;
  maxSessions: number;
  /** Global cap on open fd-channel connections. */
  maxFdConnections: number;
  /** Global cap on mappings waiting for their fd (each holds a backing fd in brokerd). */
  maxPendingMappings: number;
  /** Percent of each global cap kept for tenants below their minimum (grants/fair-share.ts). */
  tenantReserve: number;
  /** Subordinate uid ranges (subuid(5)): a uid in a user's range is that user's tenant. */
  subuid: string;
  /** Where the owner names of the subuid file are resolved to uids. */
  passwd: string;
  /** A session with no lease and no mapping ends after this long without a call. */
  idleTimeoutMs: number;
  /** The keepalive interval granted to leases; three missed intervals end the session. */
  leaseKeepaliveMs: number;
  maxAccessBytes: number;
  journal: string | undefined;
  /** PCI functions (BDFs) served in mode sysfs-wc (the sysfs backend): --pci BDF=sysfs-wc, --sysfs. */
  sysfs: string[];
  /** PCI functions (BDFs) served in mode vfio (the vfio backend): --pci BDF=vfio, --vfio. */
  vfio: string[];
  /** Bind functions to vfio-pci through driver_override (mode vfio: any; sysfs-wc: unbound or a host driver's). */
  vfioBind: boolean;
  /** The grant state store and the sim devices' memory (default PRIVATE-DIR/state, mode 0700). */
  stateDir: string;
  /** How long a session restored after a restart waits to be resumed before what it holds is reviewed. */
  resumeGraceMs: number;
  /** On SIGTERM/SIGINT: "keep" every grant for the next brokerd (default), or "release" them all. */
  onStop: "keep" | "release";
  /** Take over from the brokerd running on this private dir (planned upgrade, no systemd). */
  takeOver: boolean;
}

const HELP = `usage: vfio-brokerd [options]
  --workload-dir DIR    broker.sock and fd.sock, and nothing else: the directory workloads and containers
                        mount (default /run/vfio-broker, created 0755; not root: BASE/run, where BASE
                        is $XDG_RUNTIME_DIR/vfio-broker, else /tmp/vfio-broker-UID)
  --private-dir DIR     admin.sock, handover.sock, brokerd.lock (default /run/vfio-brokerd, not root:
                        BASE/private; made 0700, or 0710 with the --admin-gid group); never inside the
                        workload dir
  --runtime-dir DIR     older shorthand for --workload-dir DIR --private-dir DIR.private
                        (every directory must be brokerd's uid's, with no group/other write, and each
                        directory on the way root's or its, unwritable by others or sticky like /tmp)
  --socket PATH         gRPC BrokerService socket      (default WORKLOAD-DIR/broker.sock, mode 0666)
  --fd-socket PATH      fd channel socket              (default WORKLOAD-DIR/fd.sock, mode 0666)
  --admin-socket PATH   AdminService socket            (default PRIVATE-DIR/admin.sock, mode 0660)
  --admin-gid GROUP     group (gid or name) allowed on the admin socket besides root (default: root only)
  --policy FILE         policy file, YAML or JSON      (default /etc/vfio-broker/policy.yaml)
  --metrics HOST:PORT   Prometheus /metrics listener   (default 127.0.0.1:9464; "off" disables)
  --no-sim              do not start the simulated devices
  --sim-devices FILE    JSON list of simulated devices [{"id","regions":[{"index","size","prefetchable"}]}]
  --ticket-ttl-ms N     ticket lifetime                (default 10000)
  --max-sessions N      concurrent sessions, all identities together (default 1024)
  --max-fd-connections N  open fd-channel connections, all identities (default 1024)
  --max-pending-mappings N  mappings waiting for their fd, all identities (default 1024)
  --tenant-reserve PCT  percent of each of these caps kept for users (tenants) holding fewer than 2; the
                        rest is shared evenly by the active tenants (default 50; docs/security.md)
  --subuid FILE         subordinate uid ranges: a uid in a user's range counts as that user (default
                        /etc/subuid; re-read on SIGHUP; ignored unless owned by root and not writable by others)
  --passwd FILE         resolves the owner names in --subuid (default /etc/passwd)
  --idle-timeout-ms N   end a session that holds nothing and has no lease after N ms idle (default 30000)
  --lease-keepalive-ms N  keepalive interval granted to leases; 3 missed intervals end the session (default 5000)
                        (brokerd lowers these caps to fit its RLIMIT_NOFILE, keeping a reserve of fds
                        for the admin socket, metrics and journal; per-identity quotas are in the policy)
  --journal FILE        audit journal (JSON lines)     (default stderr)
  --state-dir DIR       grant state store + sim BAR memory, kept across restarts (default PRIVATE-DIR/state,
                        mode 0700; on /run it lasts until reboot, as grants do: no process outlives a reboot)
  --resume-grace-ms N   a session restored after a restart waits N ms to be resumed (default 30000); then
                        it ends if it holds nothing, else its mappings stay booked until its process exits
  --take-over           planned upgrade: take the listening sockets over from the brokerd running on this
                        private dir (PRIVATE-DIR/handover.sock); it freezes its state and exits, clients resume
  --on-stop keep|release  SIGTERM/SIGINT: keep every grant for the next brokerd (default: clients resume),
                        or release them all (clients hear "shutdown" revocations)
  --pci BDF=MODE[,BDF=MODE]  serve these PCI functions, each in its mode (docs/real-hardware.md):
                        sysfs-wc  never opened through VFIO (may be bound to vfio-pci or pci-stub): resourceN /
                                  resourceN_wc fds, WC on every kernel; no device fd, DMA or interrupts
                        vfio      through vfio-pci (group/container or iommufd cdev): UC, the device fd by
                                  policy; WC only where the kernel allows it (not 7.x)
                        config file: "pci": {"0000:3b:00.1": "sysfs-wc"}; AdminService.SetDeviceMode switches
                        a device while nothing holds it (until the next start)
  --sysfs BDF[,BDF]     the same as --pci BDF=sysfs-wc for each
  --vfio BDF[,BDF]      the same as --pci BDF=vfio for each
  --vfio-bind           bind functions to vfio-pci (driver_override + drivers_probe): in mode vfio any not on
                        vfio-pci; in mode sysfs-wc an unbound one or a host driver's (pci-stub and
                        uio_pci_generic stay), only to keep host drivers off: brokerd never opens it
  --config FILE         JSON file with any of the keys above in camelCase
Every option can also be given as VFIO_BROKER_<NAME> (e.g. VFIO_BROKER_WORKLOAD_DIR).`;

function int(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max)
    throw invalid(`--${name} ${v}: expected an integer from ${min} to ${max}`);
  return n;
}

const KNOWN = new Set([
  "runtime-dir",
  "workload-dir",
  "private-dir",
  "socket",
  "fd-socket",
  "admin-socket",
  "admin-gid",
  "policy",
  "metrics",
  "sim",
  "sim-devices",
  "ticket-ttl-ms",
  "max-sessions",
  "max-fd-connections",
  "max-pending-mappings",
  "tenant-reserve",
  "subuid",
  "passwd",
  "idle-timeout-ms",
  "lease-keepalive-ms",
  "max-access-bytes",
  "journal",
  "config",
  "sysfs",
  "vfio",
  "pci",
  "vfio-bind",
  "state-dir",
  "resume-grace-ms",
  "on-stop",
  "take-over",
]);

/** A gid, or a group name looked up in /etc/group (systemd units cannot resolve names in arguments). */
function groupId(v: string, groupFile = "/etc/group"): number {
  if (/^\d+$/.test(v)) return int("admin-gid", v, 0, 2 ** 32 - 2);
  let text = "";
  try {
    text = readFileSync(groupFile, "utf8");
  } catch {
    /* reported below */
  }
  const line = text.split("\n").find((l) => l.split(":")[0] === v);
  if (!line)
    throw invalid(`--admin-gid ${v}: no such group in ${groupFile}; create it (groupadd ${v}) or give a gid`);
  return Number(line.split(":")[2]);
}

/**
 * --runtime-dir DIR, the older single directory, within one source (flags, environment or
 * --config): --workload-dir DIR and --private-dir DIR.private, unless that source names them.
 */
function expandRuntimeDir(src: Record<string, string | boolean>): void {
  const dir = src["runtime-dir"];
  if (dir === undefined) return;
  delete src["runtime-dir"];
  src["workload-dir"] ??= String(dir);
  src["private-dir"] ??= `${String(dir)}.private`;
}

/**
 * Where brokerd's directories go when none is given: /run as root; otherwise under a place only
 * this user can write ($XDG_RUNTIME_DIR/vfio-broker, else /tmp/vfio-broker-UID, which brokerd
 * refuses at start if another uid made it), never a fixed name in /tmp.
 */
export function defaultDirs(uid: number, env: NodeJS.ProcessEnv): { workload: string; private: string } {
  if (uid === 0) return { workload: "/run/vfio-broker", private: "/run/vfio-brokerd" };
  const base = env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, "vfio-broker") : `/tmp/vfio-broker-${uid}`;
  return { workload: join(base, "run"), private: join(base, "private") };
}

export function parseConfig(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  uid: number = process.geteuid?.() ?? 0,
): Config | "help" {
  const raw: Record<string, string | boolean> = {};
  // Other programs share the VFIO_BROKER_ prefix (the CLI, the console, npm start): take only
  // the variables that name one of our options; flags and --config keys are checked strictly.
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith("VFIO_BROKER_") || v === undefined) continue;
    const key = k.slice(12).toLowerCase().replaceAll("_", "-");
    if (KNOWN.has(key)) raw[key] = v;
  }
  const fromArgs: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-h" || a === "--help") return "help";
    if (!a.startsWith("--")) throw invalid(`unexpected argument "${a}"; see --help`);
    const eq = a.indexOf("=");
    const key = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (key === "no-sim") {
      fromArgs.sim = false;
      continue;
    }
    if ((key === "vfio-bind" || key === "take-over") && eq < 0) {
      fromArgs[key] = true;
      continue;
    }
    const val = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (val === undefined) throw invalid(`--${key} needs a value; see --help`);
    fromArgs[key] = val;
  }
  expandRuntimeDir(raw);
  expandRuntimeDir(fromArgs);
  if (typeof (fromArgs.config ?? raw.config) === "string") {
    const file = String(fromArgs.config ?? raw.config);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(readFileSync(file, "utf8"));
    } catch (e) {
      throw invalid(`--config ${file}: ${(e as Error).message}`);
    }
    const fromFile: Record<string, string | boolean> = {};
    for (const [k, v] of Object.entries(json))
      fromFile[k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)] =
        typeof v === "boolean" ? v : typeof v === "string" ? v : JSON.stringify(v);
    expandRuntimeDir(fromFile);
    Object.assign(raw, fromFile);
  }
  Object.assign(raw, fromArgs);
  for (const k of Object.keys(raw)) if (!KNOWN.has(k)) throw invalid(`unknown option --${k}; see --help`);
  const dirs = defaultDirs(uid, env);
  const dir = String(raw["workload-dir"] ?? dirs.workload);
  const privateDir = String(raw["private-dir"] ?? dirs.private);
  const str = (k: string, d: string) => (raw[k] === undefined ? d : String(raw[k]));
  let simDevices: SimDeviceSpec[] | undefined;
  if (raw["sim-devices"] !== undefined) {
    const v = String(raw["sim-devices"]);
    try {
      simDevices = JSON.parse(v.trim().startsWith("[") ? v : readFileSync(v, "utf8"));
    } catch (e) {
      throw invalid(`--sim-devices ${v}: ${(e as Error).message}`);
    }
    if (!Array.isArray(simDevices)) throw invalid(`--sim-devices must be a JSON list of devices`);
  }
  const metrics = str("metrics", "127.0.0.1:9464");
  const onStop = str("on-stop", "keep");
  if (onStop !== "keep" && onStop !== "release")
    throw invalid(`--on-stop ${onStop}: expected "keep" (grants survive the restart) or "release"`);
  return {
    workloadDir: dir,
    privateDir,
    socket: str("socket", join(dir, "broker.sock")),
    fdSocket: str("fd-socket", join(dir, "fd.sock")),
    adminSocket: str("admin-socket", join(privateDir, "admin.sock")),
    adminGid: raw["admin-gid"] === undefined ? -1 : groupId(String(raw["admin-gid"])),
    policy: str("policy", "/etc/vfio-broker/policy.yaml"),
    metrics: metrics === "off" ? "" : metrics,
    sim: raw.sim === undefined ? true : raw.sim !== false && raw.sim !== "false" && raw.sim !== "0",
    simDevices,
    ticketTtlMs: int("ticket-ttl-ms", str("ticket-ttl-ms", "10000"), 100, 3_600_000),
    maxSessions: int("max-sessions", str("max-sessions", "1024"), 1, 1_000_000),
    maxFdConnections: int("max-fd-connections", str("max-fd-connections", "1024"), 1, 1_000_000),
    maxPendingMappings: int("max-pending-mappings", str("max-pending-mappings", "1024"), 1, 1_000_000),
    tenantReserve: int("tenant-reserve", str("tenant-reserve", "50"), 0, 90),
    subuid: str("subuid", "/etc/subuid"),
    passwd: str("passwd", "/etc/passwd"),
    idleTimeoutMs: int("idle-timeout-ms", str("idle-timeout-ms", "30000"), 100, 86_400_000),
    leaseKeepaliveMs: int("lease-keepalive-ms", str("lease-keepalive-ms", "5000"), 100, 3_600_000),
    maxAccessBytes: int("max-access-bytes", str("max-access-bytes", "4096"), 1, 1 << 20),
    journal: raw.journal === undefined ? undefined : String(raw.journal),
    ...pciModes(raw),
    vfioBind: raw["vfio-bind"] === true || raw["vfio-bind"] === "true" || raw["vfio-bind"] === "1",
    stateDir: str("state-dir", join(privateDir, "state")),
    resumeGraceMs: int("resume-grace-ms", str("resume-grace-ms", "30000"), 100, 86_400_000),
    onStop,
    takeOver: raw["take-over"] === true || raw["take-over"] === "true" || raw["take-over"] === "1",
  };
}

export { HELP };
