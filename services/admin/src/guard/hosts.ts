// Which names this console answers to. A browser page on evil.example can make its own name
// resolve to 127.0.0.1 (DNS rebinding); the browser then treats the console as evil.example's
// own origin, and the only trace of the trick is the Host header, which still says evil.example.
// So every request must name the console by a name the operator chose: a loopback name, the IP
// address the connection arrived on (an IP literal cannot be rebound), or a name given with
// --allowed-host (a proxy's name, say). The same names decide which Origins count as the
// console's own pages (guard/browser.ts). Pure functions: no fastify here.
import { isIPv4, isIPv6 } from "node:net";

/** A host[:port] as it appears in Host, Origin or --allowed-host: name lower-cased, IPv6 in []. */
export interface Authority {
  name: string;
  port: number | null;
}

/** Where a connection arrived: its socket's local address and port. */
export interface Local {
  address?: string | undefined;
  port?: number | undefined;
}

// A DNS name or dotted IPv4 (letters, digits, "-" and "."), or a bracketed IPv6; optional port.
// No trailing dot, no userinfo, no wildcard: anything else is not a name we could have meant.
const AUTHORITY = /^(\[[0-9a-f:.]{2,45}\]|[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?)(?::([1-9][0-9]{0,4}))?$/;

export function parseAuthority(value: string): Authority | undefined {
  const m = AUTHORITY.exec(value.toLowerCase());
  if (!m) return undefined;
  const port = m[2] === undefined ? null : Number(m[2]);
  if (port !== null && port > 65535) return undefined;
  return { name: m[1]!, port };
}

/** The loopback names a local browser or curl uses; always allowed. */
export const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"] as const;

/** The socket's local address as a Host name: "10.0.0.5", "[fe80::1]" (IPv4-mapped IPv6 unwrapped). */
function localName(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (v4) return v4;
  return isIPv6(address) ? `[${address.toLowerCase()}]` : address;
}

/** Is --listen HOST loopback only? ("localhost", 127.0.0.0/8, ::1, and ::ffff:127.x.y.z) */
export function isLoopbackListen(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (h === "localhost") return true;
  const v4 = /^(?:::ffff:)?(\d+\.\d+\.\d+\.\d+)$/.exec(h)?.[1];
  if (v4 && isIPv4(v4)) return v4.startsWith("127.");
  if (!isIPv6(h)) return false;
  return new URL(`http://[${h}]/`).hostname === "[::1]";
}

export class HostPolicy {
  readonly configured: readonly Authority[];

  constructor(configured: readonly Authority[] = []) {
    this.configured = configured;
  }

  /**
   * A Host header names this console: a loopback name or the connection's own address, with no
   * port or the port it arrived on; or a configured name (NAME: no port or the listening port;
   * NAME:PORT: exactly that port).
   */
  hostAllowed(host: string | undefined, local: Local): boolean {
    const a = host === undefined ? undefined : parseAuthority(host);
    if (!a) return false;
    if (this.isSelf(a.name, local) && (a.port === null || a.port === local.port)) return true;
    return this.configured.some((c) => matchesConfigured(c, a, local));
  }

  /**
   * An Origin header is one of this console's own pages: http(s) on a loopback name or the
   * connection's address at exactly the listening port (not "localhost:3000", another local web
   * server), or a configured name as for Host. "null" and anything unparsable are not.
   */
  originAllowed(origin: string, local: Local): boolean {
    const m = /^(https?):\/\/(.+)$/.exec(origin.toLowerCase());
    const a = m ? parseAuthority(m[2]!) : undefined;
    if (!m || !a) return false;
    const port = a.port ?? (m[1] === "https" ? 443 : 80);
    if (this.isSelf(a.name, local) && port === local.port) return true;
    return this.configured.some((c) => matchesConfigured(c, a, local));
  }

  /** The URLs to suggest in a refusal: what the operator should type instead. */
  suggestion(local: Local): string {
    const port = local.port ? `:${local.port}` : "";
    const names = this.configured.map((c) => (c.port === null ? c.name : `${c.name}:${c.port}`));
    return (
      `http://127.0.0.1${port}/ or http://localhost${port}/` +
      (names.length ? `, or a name given with --allowed-host (${names.join(", ")})` : "")
    );
  }

  private isSelf(name: string, local: Local): boolean {
    return (LOOPBACK_NAMES as readonly string[]).includes(name) || name === localName(local.address);
  }
}

function matchesConfigured(c: Authority, a: Authority, local: Local): boolean {
  if (c.name !== a.name) return false;
  if (c.port !== null) return a.port === c.port;
  return a.port === null || a.port === local.port;
}
