// The admin service's fastify application, wired in one place: OpenAPI (/openapi.json, /docs),
// the request guards (guard/: Host, Origin, and the token on every route not declared public),
// one plugin per resource under /api/v1, the console's static files, and one error format
// ({statusCode, error, message}) for every failure. It holds no device state: every answer comes
// from brokerd's AdminService at the time of the request.
import swagger from "@fastify/swagger";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from "fastify";
import { type Brokerd, HttpError } from "./brokerd.js";
import { CONNECTION_OPTIONS, limitConnections } from "./connections.js";
import { type Authority, HostPolicy } from "./guard/hosts.js";
import { installGuards } from "./guard/index.js";
import { bounded, quoted } from "./quote.js";
import { deviceFilesRoutes } from "./routes/device-files.js";
import { devicesRoutes } from "./routes/devices.js";
import { healthRoutes, probeRoutes } from "./routes/health.js";
import { policyRoutes } from "./routes/policy.js";
import { sessionsRoutes } from "./routes/sessions.js";
import { staticRoutes } from "./static.js";

export const VERSION = "0.1.0";

export interface AppOptions {
  brokerd: Brokerd;
  token: string;
  /** Where the token lives, to tell a caller without one where to look. */
  tokenFile: string;
  /** The console's files (services/admin/public). */
  publicDir: string;
  /** Names besides loopback that the console answers to (--allowed-host); see guard/hosts.ts. */
  allowedHosts?: readonly Authority[];
  logger?: boolean;
  /** Whether the console listens on loopback only (then every peer's uid can be read; connections.ts). */
  loopback?: boolean;
}

/** What a field should look like, for 400 messages ("deviceId must match pattern ..." is not enough). */
const HINTS: Record<string, string> = {
  deviceId: 'a device id such as "sim0" or "0000:3b:00.0" (letters, digits, ":._-", at most 64)',
  sessionId: "a session id: 16 lower-case hex digits, as GET /api/v1/sessions lists",
  deviceFileId: 'a DeviceFile id: a positive decimal integer string such as "1"',
  cookie: 'a mapping cookie: a decimal uint64 string such as "1099511627776"',
  size: 'a size in bytes as a decimal string such as "65536"',
};

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: 16 * 1024,
    ...CONNECTION_OPTIONS,
    // Reject unknown fields instead of silently dropping them; never coerce ids between types.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
    // A path the router cannot decode (bad %-escape) or with an over-long parameter: fastify's own
    // answer would echo the whole path; ours quotes and cuts it. No route ran, nothing to guard.
    frameworkErrors: (err, req, reply) => {
      const code = err.statusCode ?? 400;
      const message = `the path ${quoted(req.url.split("?")[0] ?? "")} is malformed (bad %-escape or a parameter too long)`;
      void (reply as FastifyReply).code(code).send({ statusCode: code, error: httpReason(code), message });
    },
  });

  limitConnections(app.server, opts.loopback ?? true);
  installGuards(app, {
    hosts: new HostPolicy(opts.allowedHosts ?? []),
    token: opts.token,
    tokenFile: opts.tokenFile,
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "vfio-broker admin API",
        version: VERSION,
        description:
          "Operators' view and controls of vfio-brokerd: devices, sessions, device files, mappings, policy. " +
          "Send the token from the admin token file as `Authorization: Bearer TOKEN`. uint64 values are decimal strings.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      security: [{ bearer: [] }],
      tags: ["health", "devices", "sessions", "device-files", "mappings", "policy"].map((name) => ({ name })),
    },
  });

  app.addHook("onSend", async (_req, reply, payload) => {
    reply.header("x-content-type-options", "nosniff");
    reply.header("referrer-policy", "no-referrer");
    reply.header("x-frame-options", "DENY");
    return payload;
  });

  // POSTs without a body (revoke, drain, reload) mean "no options": validate them as {}.
  app.addHook("preValidation", async (req) => {
    if (req.method === "POST" && req.body === undefined) req.body = {};
  });

  app.setErrorHandler((err: FastifyError | HttpError, req, reply) => {
    if (err instanceof HttpError) {
      if (err.statusCode === 503) reply.header("retry-after", "1");
      return reply.code(err.statusCode).send({
        statusCode: err.statusCode,
        error: httpReason(err.statusCode),
        message: err.message,
        ...err.details,
      });
    }
    const fe = err as FastifyError;
    if (fe.validation) {
      const v = fe.validation[0];
      const field =
        (v?.instancePath.split("/").pop() || (v?.params as { missingProperty?: string })?.missingProperty) ??
        "";
      const extra = (v?.params as { additionalProperty?: string })?.additionalProperty;
      const hint = extra
        ? `: ${quoted(extra)} is not one of its fields (see /openapi.json)`
        : HINTS[field]
          ? `; expected ${HINTS[field]}`
          : "";
      return reply
        .code(400)
        .send({ statusCode: 400, error: "Bad Request", message: `${bounded(fe.message)}${hint}` });
    }
    const code = fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500 ? fe.statusCode : 500;
    if (code === 500) req.log.error(err);
    if (code === 500)
      process.stderr.write(`vfio-broker-admin: ${req.method} ${req.url}: ${fe.stack ?? fe.message}\n`);
    return reply.code(code).send({
      statusCode: code,
      error: httpReason(code),
      // fastify's and the JSON parser's messages may quote the request: cut them.
      message: code === 500 ? "internal error in vfio-broker-admin; see its log" : bounded(fe.message),
    });
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({
      statusCode: 404,
      error: "Not Found",
      message: `no route ${req.method} ${quoted(req.url.split("?")[0] ?? "")}; the API is described at /openapi.json and /docs`,
    });
  });

  app.get("/openapi.json", { schema: { hide: true }, config: { access: "public" } }, async () =>
    app.swagger(),
  );
  await app.register(probeRoutes, { brokerd: opts.brokerd });
  await app.register(
    async (api) => {
      await api.register(healthRoutes, { brokerd: opts.brokerd });
      await api.register(devicesRoutes, { brokerd: opts.brokerd });
      await api.register(sessionsRoutes, { brokerd: opts.brokerd });
      await api.register(deviceFilesRoutes, { brokerd: opts.brokerd });
      await api.register(policyRoutes, { brokerd: opts.brokerd });
    },
    { prefix: "/api/v1" },
  );
  await app.register(staticRoutes, { dir: opts.publicDir });
  return app;
}

function httpReason(code: number): string {
  const reasons: Record<number, string> = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
  };
  return reasons[code] ?? "Error";
}
