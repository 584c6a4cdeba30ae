// A stand-in for the Kubernetes API server, for the node agent's tests (no API server can run on
// this machine): HTTPS with a certificate made here by openssl, bearer-token authentication, and
// the resource.k8s.io/v1 paths the agent uses, answering as the real server does: objects with
// server-set metadata (uid, resourceVersion, creationTimestamp), Status objects for errors, 404
// NotFound, 409 AlreadyExists on create, 409 Conflict on an update with a stale resourceVersion.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BASE = "/apis/resource.k8s.io/v1";

export interface StandIn {
  url: string;
  ca: string;
  token: string;
  slices: Map<string, Record<string, unknown>>;
  claims: Map<string, Record<string, unknown>>;
  /** "METHOD path" of every request, in order. */
  log: string[];
  /** Called after a slice GET is answered: a test plays another writer there. */
  afterSliceGet?: (name: string) => void;
  close(): Promise<void>;
}

function status(code: number, reason: string, message: string) {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

export async function startStandIn(): Promise<StandIn> {
  const dir = mkdtempSync(join(tmpdir(), "apiserver-"));
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-keyout",
      join(dir, "key.pem"),
      "-out",
      join(dir, "cert.pem"),
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ],
    { stdio: "ignore" },
  );
  const cert = readFileSync(join(dir, "cert.pem"), "utf8");
  const key = readFileSync(join(dir, "key.pem"), "utf8");
  rmSync(dir, { recursive: true });
  const token = `token-${process.pid}`;
  const slices = new Map<string, Record<string, unknown>>();
  const claims = new Map<string, Record<string, unknown>>();
  const log: string[] = [];
  let rv = 1000;
  const standIn = {} as StandIn;
  const server = https.createServer({ cert, key }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = new URL(req.url ?? "/", "https://x").pathname;
      log.push(`${req.method} ${path}`);
      const send = (code: number, body: unknown) => {
        res.writeHead(code, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (req.headers.authorization !== `Bearer ${token}`)
        return send(401, status(401, "Unauthorized", "Unauthorized"));
      const body = chunks.length
        ? (JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>)
        : {};
      const meta = (body.metadata ?? {}) as Record<string, unknown>;
      let m = path.match(/^\/apis\/resource\.k8s\.io\/v1\/namespaces\/([^/]+)\/resourceclaims\/([^/]+)$/);
      if (m && req.method === "GET") {
        const c = claims.get(`${m[1]}/${m[2]}`);
        return c
          ? send(200, c)
          : send(404, status(404, "NotFound", `resourceclaims.resource.k8s.io "${m[2]}" not found`));
      }
      if (path === `${BASE}/resourceslices` && req.method === "POST") {
        if (body.apiVersion !== "resource.k8s.io/v1" || body.kind !== "ResourceSlice") {
          return send(400, status(400, "BadRequest", "wrong apiVersion or kind"));
        }
        const name = String(meta.name);
        if (slices.has(name)) {
          return send(
            409,
            status(409, "AlreadyExists", `resourceslices.resource.k8s.io "${name}" already exists`),
          );
        }
        const obj = {
          ...body,
          metadata: {
            ...meta,
            uid: `uid-${rv}`,
            resourceVersion: String(++rv),
            creationTimestamp: new Date().toISOString(),
          },
        };
        slices.set(name, obj);
        return send(201, obj);
      }
      m = path.match(/^\/apis\/resource\.k8s\.io\/v1\/resourceslices\/([^/]+)$/);
      if (m) {
        const name = m[1] as string;
        const cur = slices.get(name);
        if (!cur)
          return send(404, status(404, "NotFound", `resourceslices.resource.k8s.io "${name}" not found`));
        if (req.method === "GET") {
          send(200, cur);
          standIn.afterSliceGet?.(name);
          return;
        }
        if (req.method === "PUT") {
          const curMeta = cur.metadata as Record<string, unknown>;
          if (meta.name !== name)
            return send(400, status(400, "BadRequest", "the name of the object does not match the URL"));
          if (meta.resourceVersion !== undefined && meta.resourceVersion !== curMeta.resourceVersion) {
            return send(
              409,
              status(
                409,
                "Conflict",
                `Operation cannot be fulfilled on resourceslices.resource.k8s.io "${name}": the object has been modified; please apply your changes to the latest version and try again`,
              ),
            );
          }
          const obj = { ...body, metadata: { ...curMeta, resourceVersion: String(++rv) } };
          slices.set(name, obj);
          return send(200, obj);
        }
      }
      send(404, status(404, "NotFound", "the server could not find the requested resource"));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  Object.assign(standIn, {
    url: `https://127.0.0.1:${port}`,
    ca: cert,
    token,
    slices,
    claims,
    log,
    close: () => new Promise<void>((r) => server.close(() => r())),
  });
  return standIn;
}

/** A ResourceClaim as the API server returns it once allocated and reserved for one pod. */
export function allocatedClaim(o: {
  namespace: string;
  name: string;
  uid: string;
  podUid: string;
  results: { driver: string; pool: string; device: string; request?: string }[];
}): Record<string, unknown> {
  return {
    apiVersion: "resource.k8s.io/v1",
    kind: "ResourceClaim",
    metadata: { name: o.name, namespace: o.namespace, uid: o.uid, resourceVersion: "42" },
    spec: { devices: { requests: [{ name: "bar", exactly: { deviceClassName: "vfio-broker.io" } }] } },
    status: {
      allocation: {
        devices: { results: o.results.map((r) => ({ request: r.request ?? "bar", ...r })) },
        nodeSelector: {
          nodeSelectorTerms: [
            { matchFields: [{ key: "metadata.name", operator: "In", values: [o.results[0]?.pool ?? ""] }] },
          ],
        },
      },
      reservedFor: [{ resource: "pods", name: "workload", uid: o.podUid }],
    },
  };
}
