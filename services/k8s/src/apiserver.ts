// The agent's REST client for the Kubernetes API server: JSON over HTTPS with the pod's service
// account token and the cluster CA (in-cluster config), bounded responses, and the two object kinds
// the agent touches (resource.k8s.io/v1 ResourceClaims, read; ResourceSlices, created and updated).
// Owns transport and paths only; what a claim or slice means is claim.ts's and slice.ts's.
import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import { MAX_API_RESPONSE_BYTES } from "./names.js";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
const RESOURCE = "/apis/resource.k8s.io/v1";
const TIMEOUT_MS = 10_000;

export interface ApiConfig {
  /** "https://10.0.0.1:443"; "http://" only for a stand-in on the loopback. */
  server: string;
  token: string;
  /**
   * Where the token comes from, re-read before each request when set: a projected service
   * account token is replaced by the kubelet before it expires (expirationSeconds).
   */
  tokenFile?: string;
  /** PEM of the CA that signed the API server's certificate. */
  ca?: string;
}

/** The in-cluster config: KUBERNETES_SERVICE_HOST/PORT, the service account token and CA. */
export function inClusterConfig(env = process.env, dir = SERVICE_ACCOUNT_DIR): ApiConfig {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? "443";
  if (!host) throw new Error("KUBERNETES_SERVICE_HOST is not set: not running in a pod");
  const h = host.includes(":") ? `[${host}]` : host;
  return {
    server: `https://${h}:${port}`,
    token: readFileSync(`${dir}/token`, "utf8").trim(),
    tokenFile: `${dir}/token`,
    ca: readFileSync(`${dir}/ca.crt`, "utf8"),
  };
}

/** A non-2xx answer; `status` is the HTTP status (404 not found, 409 conflict or already exists). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class ApiServer {
  constructor(private readonly cfg: ApiConfig) {
    const u = new URL(cfg.server);
    if (
      u.protocol !== "https:" &&
      !(u.protocol === "http:" && ["127.0.0.1", "[::1]", "localhost"].includes(u.hostname))
    ) {
      throw new Error(`API server ${cfg.server}: only https (or http on the loopback, for a stand-in)`);
    }
  }

  getClaim(namespace: string, name: string): Promise<unknown> {
    return this.request(
      "GET",
      `${RESOURCE}/namespaces/${encodeURIComponent(namespace)}/resourceclaims/${encodeURIComponent(name)}`,
    );
  }

  /** The named ResourceSlice, or undefined when there is none. */
  async getSlice(name: string): Promise<Record<string, unknown> | undefined> {
    try {
      return (await this.request("GET", `${RESOURCE}/resourceslices/${encodeURIComponent(name)}`)) as Record<
        string,
        unknown
      >;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return undefined;
      throw e;
    }
  }

  createSlice(obj: Record<string, unknown>): Promise<unknown> {
    return this.request("POST", `${RESOURCE}/resourceslices`, obj);
  }

  /** Replaces a slice; obj.metadata.resourceVersion makes it conditional (409 when stale). */
  updateSlice(name: string, obj: Record<string, unknown>): Promise<unknown> {
    return this.request("PUT", `${RESOURCE}/resourceslices/${encodeURIComponent(name)}`, obj);
  }

  private token(): string {
    if (!this.cfg.tokenFile) return this.cfg.token;
    try {
      return readFileSync(this.cfg.tokenFile, "utf8").trim();
    } catch {
      return this.cfg.token;
    }
  }

  private request(method: string, path: string, body?: unknown): Promise<unknown> {
    const url = new URL(path, this.cfg.server);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {
      accept: "application/json",
      authorization: `Bearer ${this.token()}`,
    };
    if (payload) {
      headers["content-type"] = "application/json";
      headers["content-length"] = String(payload.length);
    }
    const mod = url.protocol === "https:" ? https : http;
    const opts: https.RequestOptions = { method, headers, timeout: TIMEOUT_MS };
    if (this.cfg.ca) opts.ca = this.cfg.ca;
    return new Promise((resolve, reject) => {
      const req = mod.request(url, opts, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_API_RESPONSE_BYTES) {
            req.destroy(new Error(`${method} ${path}: response larger than ${MAX_API_RESPONSE_BYTES} bytes`));
          } else chunks.push(c);
        });
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const status = res.statusCode ?? 0;
          if (status < 200 || status > 299) {
            let msg = text.slice(0, 200);
            try {
              msg = (JSON.parse(text) as { message?: string }).message ?? msg;
            } catch {}
            reject(new ApiError(status, `${method} ${path}: ${status} ${msg}`));
            return;
          }
          try {
            resolve(JSON.parse(text));
          } catch {
            reject(new Error(`${method} ${path}: the answer is not JSON`));
          }
        });
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer in ${TIMEOUT_MS} ms`)));
      req.on("error", reject);
      req.end(payload);
    });
  }
}
