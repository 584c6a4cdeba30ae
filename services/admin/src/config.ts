// vfio-broker-admin's configuration: flags, or VFIO_BROKER_ADMIN_* / VFIO_BROKER_ADMIN_SOCKET
// environment variables. Validated up front with messages that say what to write instead.
// Listening beyond loopback is refused unless asked for by name (--allow-remote): the console
// speaks plain HTTP, so its token would cross the network in clear text.
import { type Authority, isLoopbackListen, parseAuthority } from "./guard/hosts.js";
import { defaultTokenFile } from "./token.js";

export interface AdminConfig {
  adminSocket: string;
  host: string;
  port: number;
  tokenFile: string;
  log: boolean;
  /** Names besides loopback that Host and Origin may carry (guard/hosts.ts). */
  allowedHosts: Authority[];
  /** --allow-remote: the operator accepts listening on a non-loopback address. */
  allowRemote: boolean;
}

export const HELP = `usage: vfio-broker-admin [options]
  --admin-socket PATH   brokerd's AdminService socket (default /run/vfio-brokerd/admin.sock;
                        env VFIO_BROKER_ADMIN_SOCKET)
  --listen HOST:PORT    REST API and console (default 127.0.0.1:8080; env VFIO_BROKER_ADMIN_LISTEN).
                        Keep it on loopback; put a TLS proxy in front for remote access.
  --allowed-host NAME[:PORT]
                        also answer to this name (repeatable; env VFIO_BROKER_ADMIN_ALLOWED_HOSTS,
                        comma-separated), e.g. the TLS proxy's name. Without it only localhost,
                        127.0.0.1, [::1] and the address a request arrived on are accepted in Host,
                        and only those origins may POST/DELETE (against DNS rebinding and
                        cross-site requests). NAME alone: no port or the listening port.
  --allow-remote        allow --listen on a non-loopback address (plain HTTP: the token crosses the
                        network in clear text; env VFIO_BROKER_ADMIN_ALLOW_REMOTE=1)
  --token-file PATH     bearer token, created 0600 on first start (default $STATE_DIRECTORY/admin-token,
                        else /var/lib/vfio-broker/admin-token; env VFIO_BROKER_ADMIN_TOKEN_FILE). Its
                        directory must be this user's, not writable by others (nor anything on the way);
                        a token file that is a link, someone else's, or open to others is refused
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

/** One --allowed-host value: a DNS name, IPv4 or [IPv6], optional port. No wildcards. */
export function parseAllowedHost(value: string): Authority {
  if (value.includes("*"))
    throw new ConfigError(
      `--allowed-host ${value}: no wildcards; list each name (a wildcard would let DNS rebinding names in)`,
    );
  const a = parseAuthority(value);
  if (!a)
    throw new ConfigError(
      `--allowed-host ${value}: expected NAME or NAME:PORT such as admin.example.com or admin.example.com:8443`,
    );
  return a;
}

const isTrue = (v: string | undefined) => v === "1" || v === "true";

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): AdminConfig | "help" {
  const flags: Record<string, string> = {};
  const allowedHosts: string[] = [];
  let log = isTrue(env.VFIO_BROKER_ADMIN_LOG);
  let allowRemote = isTrue(env.VFIO_BROKER_ADMIN_ALLOW_REMOTE);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-h" || a === "--help") return "help";
    if (a === "--log") {
      log = true;
      continue;
    }
    if (a === "--allow-remote") {
      allowRemote = true;
      continue;
    }
    const eq = a.indexOf("=");
    const key = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (!a.startsWith("--") || !["admin-socket", "listen", "token-file", "allowed-host"].includes(key))
      throw new ConfigError(`unknown argument "${a}"; see --help`);
    const val = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (val === undefined || val === "") throw new ConfigError(`--${key} needs a value; see --help`);
    if (key === "allowed-host") allowedHosts.push(val);
    else flags[key] = val;
  }
  if (allowedHosts.length === 0 && env.VFIO_BROKER_ADMIN_ALLOWED_HOSTS)
    allowedHosts.push(...env.VFIO_BROKER_ADMIN_ALLOWED_HOSTS.split(/[\s,]+/).filter(Boolean));
  const listen = parseListen(flags.listen ?? env.VFIO_BROKER_ADMIN_LISTEN ?? "127.0.0.1:8080");
  if (!allowRemote && !isLoopbackListen(listen.host))
    throw new ConfigError(
      `--listen ${listen.host}:${listen.port} is not a loopback address, refused: the console speaks plain ` +
        "HTTP, so the admin token would cross the network in clear text and anyone who can reach the port " +
        "could try it. Listen on 127.0.0.1 and put a TLS proxy in front (with --allowed-host PROXY_NAME), " +
        "or add --allow-remote if you accept that",
    );
  return {
    adminSocket: flags["admin-socket"] ?? env.VFIO_BROKER_ADMIN_SOCKET ?? "/run/vfio-brokerd/admin.sock",
    ...listen,
    tokenFile: flags["token-file"] ?? env.VFIO_BROKER_ADMIN_TOKEN_FILE ?? defaultTokenFile(env),
    log,
    allowedHosts: allowedHosts.map(parseAllowedHost),
    allowRemote,
  };
}
