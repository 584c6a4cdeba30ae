// Serves the web console (services/admin/public: plain HTML, CSS and ES modules, no build step).
// The file list is read once at start and served from memory: a request path can only ever name
// one of those files, so there is no path to traverse. No token is needed for these files
// (`access: "public"`, see guard/index.ts); the console asks for the token and sends it on every
// /api call.
import { readdirSync, readFileSync } from "node:fs";
import { extname, join } from "node:path";
import type { FastifyInstance } from "fastify";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".svg": "image/svg+xml",
  ".ico": "image/x-icon",
};

/** Content-Security-Policy of every console page: only our own files, no inline script. */
export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

export async function staticRoutes(app: FastifyInstance, opts: { dir: string }): Promise<void> {
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const name of readdirSync(opts.dir)) {
    const type = TYPES[extname(name)];
    if (type) files.set(`/${name}`, { body: readFileSync(join(opts.dir, name)), type });
  }
  const alias: Record<string, string> = { "/": "/index.html", "/docs": "/docs.html" };
  const paths = [...files.keys(), ...Object.keys(alias).filter((a) => files.has(alias[a]!))];
  for (const path of paths) {
    const file = files.get(alias[path] ?? path)!;
    app.get(path, { schema: { hide: true }, config: { access: "public" } }, async (_req, reply) => {
      reply
        .header("content-type", file.type)
        .header("cache-control", "no-cache")
        .header("content-security-policy", CSP);
      return reply.send(file.body);
    });
  }
}
