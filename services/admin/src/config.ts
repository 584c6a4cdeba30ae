// vfio-broker-admin's configuration: flags, or VFIO_BROKER_ADMIN_* / VFIO_BROKER_ADMIN_SOCKET
// environment variables. Validated up front with messages that say what to write instead.
import { defaultTokenFile } from "./token.js";

export interface AdminConfig {
  adminSocket: string;
  host: string;
  port: number;
  tokenFile: string;
  log: boolean;
}

export const HELP = `usage: vfio-broker-admin [options]
  --admin-socket PATH   brokerd's AdminService socket (default /run/vfio-broker/admin.sock;
                        env VFIO_BROKER_ADMIN_SOCKET)
  --listen HOST:PORT    REST API and console (default 127.0.0.1:8080; env VFIO_BROKER_ADMIN_LISTEN).
                        Keep it on loopback; put a TLS proxy in front for remote access.
  --token-file PATH     bearer token, created 0600 on first start (default $STATE_DIRECTORY/admin-token,
                        else /var/lib/vfio-broker/admin-token; env VFIO_BROKER_ADMIN_TOKEN_FILE)
  --log                 log every request (JSON lines on stdout; env VFIO_BROKER_ADMIN_LOG=1)
The console is at http://HOST:PORT/, the API under /api/v1, its OpenAPI document at /openapi.json.`;

export class ConfigError extends Error {}

export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(m?.[3]);
  if (!m || port > 65535)
    throw new ConfigError(`--listen ${value}: expected HOST:PORT such as 127.0.0.1:8080 or [::1]:8080`);
  return { host: (m[1] ?? m[2])!, port };
}

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): AdminConfig | "help" {
  const flags: Record<string, string> = {};
  let log = env.VFIO_BROKER_ADMIN_LOG === "1" || env.VFIO_BROKER_ADMIN_LOG === "true";
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-h" || a === "--help") return "help";
    if (a === "--log") {
      log = true;
      continue;
    }
    const eq = a.indexOf("=");
    const key = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (!a.startsWith("--") || !["admin-socket", "listen", "token-file"].includes(key))
      throw new ConfigError(`unknown argument "${a}"; see --help`);
    const val = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (val === undefined || val === "") throw new ConfigError(`--${key} needs a value; see --help`);
    flags[key] = val;
  }
  const listen = parseListen(flags.listen ?? env.VFIO_BROKER_ADMIN_LISTEN ?? "127.0.0.1:8080");
  return {
    adminSocket: flags["admin-socket"] ?? env.VFIO_BROKER_ADMIN_SOCKET ?? "/run/vfio-broker/admin.sock",
    ...listen,
    tokenFile: flags["token-file"] ?? env.VFIO_BROKER_ADMIN_TOKEN_FILE ?? defaultTokenFile(env),
    log,
  };
}
