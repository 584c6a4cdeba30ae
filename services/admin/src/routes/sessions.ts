// /api/v1/sessions: connected clients with their kernel-verified identity (uid, gid, pid, cgroup),
// and revoking a whole session (every device file and mapping it holds; its lease is told why).
import type { FastifyInstance } from "fastify";
import type { Brokerd } from "../brokerd.js";
import { HttpError } from "../brokerd.js";
import { quoted } from "../quote.js";
import {
  REVOKE_BODY,
  REVOKED,
  type RevokeBody,
  responses,
  revokedView,
  SESSION,
  SESSION_ID,
  sessionView,
} from "../views.js";

const TAGS = ["sessions"];
const params = { type: "object", required: ["sessionId"], properties: { sessionId: SESSION_ID } } as const;

export async function sessionsRoutes(app: FastifyInstance, opts: { brokerd: Brokerd }): Promise<void> {
  const { brokerd } = opts;

  app.get(
    "/sessions",
    {
      schema: {
        tags: TAGS,
        summary: "List connected client sessions with their identity",
        response: responses({ type: "object", properties: { sessions: { type: "array", items: SESSION } } }),
      },
    },
    async () => {
      const r = await brokerd.call((c) => c.listSessions({}));
      return { sessions: r.sessions.map(sessionView) };
    },
  );

  app.get<{ Params: { sessionId: string } }>(
    "/sessions/:sessionId",
    {
      schema: {
        tags: TAGS,
        summary: "One session",
        params,
        response: responses({ type: "object", properties: { session: SESSION } }, 200, [404]),
      },
    },
    async (req) => {
      const r = await brokerd.call((c) => c.listSessions({}));
      const s = r.sessions.find((x) => x.sessionId === req.params.sessionId);
      if (!s)
        throw new HttpError(
          404,
          `no session ${quoted(req.params.sessionId)}; GET /api/v1/sessions lists the live ones`,
        );
      return { session: sessionView(s) };
    },
  );

  app.post<{ Params: { sessionId: string }; Body: RevokeBody }>(
    "/sessions/:sessionId/revoke",
    {
      schema: {
        tags: TAGS,
        summary:
          "Revoke a session and end it: what it has not received is released; what it mapped stays booked until its process unmaps or exits (or, with enforce, until brokerd has killed it after graceMs)",
        params,
        body: REVOKE_BODY,
        response: responses(REVOKED, 200, [400, 404]),
      },
    },
    async (req) => {
      const r = await brokerd.call((c) =>
        c.revokeSession({
          sessionId: req.params.sessionId,
          reason: req.body?.reason ?? "",
          enforce: req.body?.enforce ?? false,
          graceMs: req.body?.graceMs ?? 0,
        }),
      );
      return revokedView(r.revoked);
    },
  );
}
