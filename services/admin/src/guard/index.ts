// The checks every request passes before any route runs (one onRequest hook, in this order):
// 1. the request target is a path ("origin-form"): "http://evil/api/..." or "*" is refused, so
//    there is one way to spell where a request goes;
// 2. the Host header is a name of this console (guard/hosts.ts; DNS rebinding) -> else 421;
// 3. a state-changing request does not come from another page (guard/browser.ts) -> else 403;
// 4. the token, decided on the route fastify matched, never on the raw URL: "/%61pi/v1/sessions"
//    is routed to /api/v1/sessions, so a test of the URL's spelling ("starts with /api/") let it
//    through without the token. Every route needs the token unless it is declared
//    `config: { access: "public" }`, and no /api route may be (checked when routes are added).
//    A request that matches no route gets the 404 handler, which returns nothing but its own path.
// All of it runs in onRequest, before the body is parsed or validated: a caller without the token
// learns nothing about the API, not even which inputs would be valid.
import type { FastifyInstance } from "fastify";
import { HttpError } from "../brokerd.js";
import { quoted } from "../quote.js";
import { tokenMatches } from "../token.js";
import { crossSiteRefusal } from "./browser.js";
import type { HostPolicy } from "./hosts.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** "public": served without the token (console files, /healthz, /openapi.json). Default: token. */
    access?: "public";
  }
}

export interface GuardOptions {
  hosts: HostPolicy;
  token: string;
  /** Where the token lives, to tell a caller without one where to look. */
  tokenFile: string;
}

export function installGuards(app: FastifyInstance, opts: GuardOptions): void {
  app.addHook("onRoute", (route) => {
    if (route.config?.access === "public" && /^\/api(\/|$)/i.test(route.url))
      throw new Error(`route ${route.method} ${route.url}: /api routes always need the token`);
  });

  app.addHook("onRequest", async (req, reply) => {
    const target = req.raw.url ?? "";
    if (!target.startsWith("/"))
      throw new HttpError(
        400,
        `request target ${quoted(target)} is not a path; send the path alone ("GET /api/v1/devices") and the name in Host`,
      );

    const local = { address: req.socket.localAddress, port: req.socket.localPort };
    if (countHeader(req.raw.rawHeaders, "host") > 1)
      throw new HttpError(400, "send one Host header, not several");
    if (!opts.hosts.hostAllowed(req.headers.host, local))
      throw new HttpError(
        421,
        `Host ${quoted(req.headers.host ?? "")} is not a name of this console, so the request is refused ` +
          `(a page that makes its own name point at this address must not reach it: DNS rebinding); ` +
          `use ${opts.hosts.suggestion(local)}, or start vfio-broker-admin with --allowed-host NAME ` +
          "for a name you reach it by (e.g. a TLS proxy's)",
      );

    const refusal = crossSiteRefusal(req.method, req.headers, opts.hosts, local);
    if (refusal) throw new HttpError(403, refusal);

    if (req.is404 || req.routeOptions.config.access === "public") return;
    const r = tokenMatches(req.headers.authorization, opts.token);
    if (r === "ok") return;
    reply.header("www-authenticate", 'Bearer realm="vfio-broker-admin"');
    throw new HttpError(
      401,
      r === "missing"
        ? `send the admin token as "Authorization: Bearer TOKEN"; it is in ${opts.tokenFile} on the admin host`
        : `wrong token; use the one in ${opts.tokenFile} (it changes only if that file is deleted)`,
    );
  });
}

/** How often a header occurs (node keeps only the first Host and drops the others silently). */
function countHeader(raw: string[], name: string): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) n++;
  return n;
}
