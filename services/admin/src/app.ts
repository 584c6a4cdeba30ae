// The admin service's fastify application, wired in one place: OpenAPI (/openapi.json, /docs),
// bearer-token auth on /api, one plugin per resource under /api/v1, the console's static files,
// and one error format ({statusCode, error, message}) for every failure. It holds no device
// state: every answer comes from brokerd's AdminService at the time of the request.
import swagger from "@fastify/swagger";
import Fastify, { type FastifyError, type FastifyInstance } from "fastify";
import { type Brokerd, HttpError } from "./brokerd.js";
import { deviceFilesRoutes } from "./routes/device-files.js";
import { devicesRoutes } from "./routes/devices.js";
import { healthRoutes, probeRoutes } from "./routes/health.js";
import { policyRoutes } from "./routes/policy.js";
import { sessionsRoutes } from "./routes/sessions.js";
import { staticRoutes } from "./static.js";
import { tokenMatches } from "./token.js";

export const VERSION = "0.1.0";

export interface AppOptions {
  brokerd: Brokerd;
  token: string;
  /** Where the token lives, to tell a caller without one where to look. */
  tokenFile: string;
  /** The console's files (services/admin/public). */
  publicDir: string;
  logger?: boolean;
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
    // Reject unknown fields instead of silently dropping them; never coerce ids between types.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
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

  // Auth runs first (onRequest: before parsing and validation), so nothing about the API is
  // revealed without the token, not even which inputs are valid.
  app.addHook("onRequest", async (req, reply) => {
    if (!req.url.startsWith("/api/")) return;
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
        ? `: "${extra}" is not one of its fields (see /openapi.json)`
        : HINTS[field]
          ? `; expected ${HINTS[field]}`
          : "";
      return reply.code(400).send({ statusCode: 400, error: "Bad Request", message: `${fe.message}${hint}` });
    }
    const code = fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500 ? fe.statusCode : 500;
    if (code === 500) req.log.error(err);
    if (code === 500)
      process.stderr.write(`vfio-broker-admin: ${req.method} ${req.url}: ${fe.stack ?? fe.message}\n`);
    return reply.code(code).send({
      statusCode: code,
      error: httpReason(code),
      message: code === 500 ? "internal error in vfio-broker-admin; see its log" : fe.message,
    });
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({
      statusCode: 404,
      error: "Not Found",
      message: `no route ${req.method} ${req.url.split("?")[0]}; the API is described at /openapi.json and /docs`,
    });
  });

  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());
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
    409: "Conflict",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
  };
  return reasons[code] ?? "Error";
}
