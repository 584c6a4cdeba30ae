// Test support: every way we know to spell an /api path so that a check on the raw URL and the
// router disagree about what it names. The router (find-my-way) decodes %-escapes before it
// matches, so "/%61pi/v1/sessions" *is* /api/v1/sessions to it; other spellings (%2F, "//", ";",
// "..", case, a trailing "/", absolute-form) are either routed the same way or not at all, and a
// guard must be right about both. Used by test/hostile/admin-rest.test.ts.

export interface Spelling {
  label: string;
  target: string;
}

const hex = (c: string) => c.charCodeAt(0).toString(16).padStart(2, "0");
const lower = (c: string) => `%${hex(c)}`;
const upper = (c: string) => `%${hex(c).toUpperCase()}`;

/** `path` (e.g. "/api/v1/devices/sim0/drain") spelled every way below, deduplicated. */
export function spellings(path: string, port: number): Spelling[] {
  const segs = path.split("/").slice(1);
  const rest = `/${segs.slice(1).join("/")}`; // everything after "/api"
  const join = (s: string[]) => `/${s.join("/")}`;
  const withSeg = (i: number, f: (s: string) => string) => join(segs.map((s, j) => (j === i ? f(s) : s)));
  const out: Spelling[] = [{ label: "as is", target: path }];
  const add = (label: string, target: string) => out.push({ label, target });

  // %-escapes of unreserved characters: the router decodes them, a prefix test does not.
  for (let i = 0; i < 3; i++)
    add(
      `%-escape api[${i}]`,
      withSeg(0, (s) => s.slice(0, i) + lower(s[i]!) + s.slice(i + 1)),
    );
  add(
    "%-escape all of api",
    withSeg(0, (s) => [...s].map(lower).join("")),
  );
  segs.forEach((s, i) => {
    if (i > 0 && s.length)
      add(
        `%-escape first of segment ${i}`,
        withSeg(i, (x) => lower(x[0]!) + x.slice(1)),
      );
  });
  add("%-escape everything (lower hex)", join(segs.map((s) => [...s].map(lower).join(""))));
  add("%-escape everything (upper hex)", join(segs.map((s) => [...s].map(upper).join(""))));
  add("double %-escape", `/%2561pi${rest}`);
  add("fullwidth a", `/%EF%BD%81pi${rest}`);
  add("overlong UTF-8 a", `/%C1%A1pi${rest}`);

  // Slashes.
  add("%2F for every /", `/${segs.join("%2F")}`);
  add("%2f after api", `/api%2f${segs.slice(1).join("/")}`);
  add("%2F before the last segment", `${join(segs.slice(0, -1))}%2F${segs.at(-1)}`);
  add("leading //", `/${path}`);
  add("// after api", `/api/${rest}`);
  add("// before the last segment", `${join(segs.slice(0, -1))}//${segs.at(-1)}`);
  add("trailing /", `${path}/`);
  add("trailing //", `${path}//`);
  add("backslashes", path.replaceAll("/", "\\"));
  add("backslash after api", `/api\\${rest.slice(1)}`);
  add("%5C after api", `/api%5C${rest.slice(1)}`);

  // Dot segments (node and find-my-way do not remove them; a proxy in front might).
  add("/x/../ prefix", `/x/..${path}`);
  add("/./ prefix", `/.${path}`);
  add("/api/./", `/api/.${rest}`);
  add("..  inside", `/api/v1/x/..${rest.slice(3)}`);
  add("%2e%2e prefix", `/x/%2e%2e${path}`);
  add("..%2f prefix", `/x/..%2f${path.slice(1)}`);

  // Matrix parameters and NULs.
  add("; after api", `/api;x=1${rest}`);
  add("; at the end", `${path};x=1`);
  add("bare ; at the end", `${path};`);
  add(
    "; in a param",
    withSeg(segs.length > 3 ? 3 : segs.length - 1, (s) => `${s};x`),
  );
  add("%00 at the end", `${path}%00`);
  add("%00 after api", `/api%00${rest}`);
  add("%20 at the end", `${path}%20`);
  add("%09 at the end", `${path}%09`);

  // Case.
  add("upper case", path.toUpperCase());
  add("/Api", `/Api${rest}`);
  add("/%41pi", `/%41pi${rest}`);

  // Query strings and fragments.
  add("?x=1", `${path}?x=1`);
  add("empty ?", `${path}?`);
  add("?/api/", `${path}?/api/`);
  add("%61pi and a query", `/%61pi${rest}?token=x&a=%2F`);
  add("#fragment", `${path}#x`);
  add("%23 fragment", `${path}%23x`);
  add("the path in the query", `/x?${path}`);

  // Combinations with the known bypass.
  add("%61pi and trailing /", `/%61pi${rest}/`);
  add("%61pi and //", `//%61pi${rest}`);
  add("%61pi and ;", `/%61pi;x${rest}`);

  // Absolute-form and asterisk-form request targets.
  add("absolute-form", `http://127.0.0.1:${port}${path}`);
  add("absolute-form %61pi", `http://127.0.0.1:${port}/%61pi${rest}`);
  add("absolute-form foreign host", `http://evil.example${path}`);
  add("absolute-form upper-case scheme", `HTTP://127.0.0.1:${port}/%61pi${rest}`);
  add("absolute-form no path", `http://127.0.0.1:${port}`);
  add("asterisk", "*");

  const seen = new Set<string>();
  return out.filter((s) => !seen.has(s.target) && seen.add(s.target));
}

export const ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;
export const STATE_CHANGING = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export interface Operation {
  method: string;
  /** OpenAPI path, e.g. /api/v1/devices/{deviceId}/drain */
  template: string;
}

/** Every /api operation the service's own /openapi.json lists (so a new route is swept too). */
export function apiOperations(openapi: { paths: Record<string, Record<string, unknown>> }): Operation[] {
  const ops: Operation[] = [];
  for (const [template, methods] of Object.entries(openapi.paths))
    if (template.startsWith("/api/"))
      for (const m of Object.keys(methods)) ops.push({ method: m.toUpperCase(), template });
  return ops;
}

/** The template with its {params} filled in from `ids`. */
export function fill(template: string, ids: Record<string, string>): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = ids[k];
    if (v === undefined) throw new Error(`no sample value for {${k}} in ${template}`);
    return v;
  });
}
