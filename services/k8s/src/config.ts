// The node agent's command line: which route it serves (DRA, or the device plugin fallback), the
// node, and where each socket and file is. Pure: argv and environment in, a Config or an error out.

export interface Config {
  mode: "dra" | "device-plugin";
  nodeName: string;
  /** brokerd's admin socket (root only). */
  adminSocket: string;
  /** The host's workload socket directory, mounted read-only into containers by the CDI specs. */
  workloadDir: string;
  cdiDir: string;
  /** The agent's own directory for its checkpoint (0700, nobody else writes there; default a
   * directory inside the plugin directory, which the DaemonSet mounts from the host). */
  stateDir: string;
  /** The kubelet's plugins_registry directory (DRA registration socket). */
  registryDir: string;
  /** The directory for the DRA plugin socket. */
  pluginDir: string;
  /** The kubelet's device-plugins directory (kubelet.sock and ours). */
  devicePluginDir: string;
  serviceAccountDir: string;
  /** Seconds between re-reads of brokerd's devices (republishing what changed). */
  refreshSeconds: number;
}

export const USAGE = `usage: vfio-broker-k8s [--mode dra|device-plugin] [--node-name NAME (default $NODE_NAME)]
  [--admin-socket PATH] [--workload-dir DIR] [--cdi-dir DIR] [--state-dir DIR]
  [--registry-dir DIR] [--plugin-dir DIR] [--device-plugin-dir DIR]
  [--service-account-dir DIR] [--refresh-seconds N (1..3600)]
(each also as --option=VALUE; --state-dir defaults to PLUGIN-DIR/checkpoint)`;

const DEFAULTS: Omit<Config, "nodeName"> = {
  mode: "dra",
  adminSocket: "/run/vfio-brokerd/admin.sock",
  workloadDir: "/run/vfio-broker",
  cdiDir: "/var/run/cdi",
  stateDir: "",
  registryDir: "/var/lib/kubelet/plugins_registry",
  pluginDir: "/var/lib/kubelet/plugins/vfio-broker.io",
  devicePluginDir: "/var/lib/kubelet/device-plugins",
  serviceAccountDir: "/var/run/secrets/kubernetes.io/serviceaccount",
  refreshSeconds: 30,
};

const FLAGS: Record<string, keyof Config> = {
  "--mode": "mode",
  "--node-name": "nodeName",
  "--admin-socket": "adminSocket",
  "--workload-dir": "workloadDir",
  "--cdi-dir": "cdiDir",
  "--state-dir": "stateDir",
  "--registry-dir": "registryDir",
  "--plugin-dir": "pluginDir",
  "--device-plugin-dir": "devicePluginDir",
  "--service-account-dir": "serviceAccountDir",
  "--refresh-seconds": "refreshSeconds",
};

export function parseArgs(argv: string[], env: Record<string, string | undefined>): Config {
  const out: Record<string, unknown> = { ...DEFAULTS, nodeName: env.NODE_NAME ?? "" };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const key = FLAGS[name];
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (!key || value === undefined) throw new Error(`unknown or incomplete option ${name}\n${USAGE}`);
    out[key] = value;
  }
  const c = out as unknown as Config;
  c.refreshSeconds = Number(out.refreshSeconds);
  if (!c.stateDir) c.stateDir = `${c.pluginDir}/checkpoint`;
  if (c.mode !== "dra" && c.mode !== "device-plugin")
    throw new Error(`--mode ${c.mode}: dra or device-plugin`);
  if (!/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/.test(c.nodeName)) {
    throw new Error(
      "the node name (--node-name or NODE_NAME, from the downward API) must be a DNS subdomain of at most 63 characters",
    );
  }
  if (!Number.isInteger(c.refreshSeconds) || c.refreshSeconds < 1 || c.refreshSeconds > 3600) {
    throw new Error("--refresh-seconds: an integer from 1 to 3600");
  }
  return c;
}
