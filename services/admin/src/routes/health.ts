// /api/v1/health: brokerd's status (version, counts, policy, backends), or 503 while it is
// unreachable. /healthz (no token) says only whether this service and brokerd are up, for probes.
import type { FastifyInstance } from "fastify";
import type { Brokerd } from "../brokerd.js";
import { HttpError } from "../brokerd.js";
import { ERROR, HEALTH_SCHEMA, healthView, responses } from "../views.js";

export async function healthRoutes(app: FastifyInstance, opts: { brokerd: Brokerd }): Promise<void> {
  const { brokerd } = opts;

  app.get(
    "/health",
    {
      schema: {
        tags: ["health"],
        summary: "brokerd's status, counts and policy",
        response: responses(HEALTH_SCHEMA),
      },
    },
    async () => healthView(await brokerd.call((c) => c.getHealth({}))),
  );
}

/** Unauthenticated liveness: 200 {admin, brokerd} when brokerd answers, 503 otherwise. No details. */
export async function probeRoutes(app: FastifyInstance, opts: { brokerd: Brokerd }): Promise<void> {
  app.get(
    "/healthz",
    {
      config: { access: "public" },
      schema: {
        tags: ["health"],
        summary: "Liveness probe (no token): is brokerd reachable",
        security: [],
        response: {
          200: { type: "object", properties: { admin: { type: "string" }, brokerd: { type: "string" } } },
          503: ERROR,
        },
      },
    },
    async () => {
      try {
        const h = await opts.brokerd.call((c) => c.getHealth({}));
        return { admin: "ok", brokerd: h.status };
      } catch (e) {
        if (e instanceof HttpError) throw new HttpError(503, "brokerd is unreachable");
        throw e;
      }
    },
  );
}
