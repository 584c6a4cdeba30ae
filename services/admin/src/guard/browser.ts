// Refusing requests that another web page made the operator's browser send. The API's token is a
// bearer header that browsers never add by themselves, so a foreign page cannot authenticate;
// this check is the second wall, for the day the first one has a hole (it had: /%61pi/... skipped
// the token check). A state-changing request is refused when the browser says it came from
// somewhere else:
// - Origin present and not one of the console's own origins (guard/hosts.ts), including "null"
//   (sandboxed frames, file: pages, opaque redirects). Browsers send Origin on every POST, PUT,
//   PATCH and DELETE, same-origin ones too, so the console's own requests carry its origin.
// - Sec-Fetch-Site other than "same-origin" or "none". "same-site" is refused as well as
//   "cross-site": a site ignores the port, so http://localhost:3000 (any other local web server,
//   or a page it serves) is "same-site" with the console on localhost:8080.
// A request with neither header is not from a browser (curl, scripts, the CLI) and passes; it
// still needs the token. GET/HEAD/OPTIONS change nothing and are left to the token check.

import { quoted } from "../quote.js";
import type { HostPolicy, Local } from "./hosts.js";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);
const ACCEPTED_FETCH_SITES = new Set(["same-origin", "none"]);

export function isStateChanging(method: string): boolean {
  return !SAFE_METHODS.has(method.toUpperCase());
}

export interface BrowserHeaders {
  origin?: string | string[] | undefined;
  "sec-fetch-site"?: string | string[] | undefined;
}

/** Why this request must be refused as sent by a foreign page (a 403 message), or undefined. */
export function crossSiteRefusal(
  method: string,
  headers: BrowserHeaders,
  hosts: HostPolicy,
  local: Local,
): string | undefined {
  if (!isStateChanging(method)) return undefined;
  const where = `use the console at ${hosts.suggestion(local)}`;
  const origin = headers.origin;
  if (origin !== undefined) {
    // Two Origin headers: no browser sends that; do not guess which one counts.
    const value = Array.isArray(origin) ? origin.join(", ") : origin;
    if (Array.isArray(origin) || !hosts.originAllowed(value, local))
      return (
        `refused ${method} from Origin ${quoted(value)}: state-changing requests are accepted only from ` +
        `this console's own pages (or from clients that send no Origin, such as curl); ${where}. ` +
        "If a proxy serves the console under another name, start vfio-broker-admin with --allowed-host NAME"
      );
  }
  const site = headers["sec-fetch-site"];
  if (site !== undefined) {
    const value = Array.isArray(site) ? site.join(", ") : site;
    if (Array.isArray(site) || !ACCEPTED_FETCH_SITES.has(value.toLowerCase()))
      return (
        `refused ${method} marked Sec-Fetch-Site: ${quoted(value)}: the browser says another page sent it ` +
        `(same-site includes other ports on this host); ${where}`
      );
  }
  return undefined;
}
