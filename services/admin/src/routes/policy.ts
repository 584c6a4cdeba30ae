// /api/v1/policy: which policy brokerd enforces (source file, digest, rule count), and reloading
// it. A bad file keeps the old policy; the reload then answers 422 with the file's errors.
import type { FastifyInstance } from "fastify";
import type { Brokerd } from "../brokerd.js";
import { HttpError } from "../brokerd.js";
import { EMPTY_BODY, responses } from "../views.js";

const POLICY = {
  type: "object",
  properties: {
    source: { type: "string", description: "The policy file brokerd loaded" },
    digest: { type: "string", description: "Digest of the loaded policy" },
    rules: { type: "integer" },
  },
} as const;

export async function policyRoutes(app: FastifyInstance, opts: { brokerd: Brokerd }): Promise<void> {
  const { brokerd } = opts;

  app.get(
    "/policy",
    { schema: { tags: ["policy"], summary: "The policy brokerd enforces now", response: responses(POLICY) } },
    async () => {
      const h = await brokerd.call((c) => c.getHealth({}));
      return { source: h.policySource, digest: h.policyDigest, rules: h.policyRules };
    },
  );

  app.post(
    "/policy/reload",
    {
      schema: {
        tags: ["policy"],
        summary: "Re-read the policy file; a bad file keeps the old policy (422 with its errors)",
        body: EMPTY_BODY,
        response: responses(POLICY, 200, [422]),
      },
    },
    async () => {
      const r = await brokerd.call((c) => c.reloadPolicy({}));
      if (!r.ok)
        throw new HttpError(
          422,
          "the policy file is invalid; brokerd keeps the old policy. Fix the file and reload",
          {
            errors: r.errors,
          },
        );
      const h = await brokerd.call((c) => c.getHealth({}));
      return { source: h.policySource, digest: r.digest, rules: r.rules };
    },
  );
}
