// /api/v1/device-files and /api/v1/mappings: clients' open views of devices, each one's cookie
// space (the MapleTree dump: regions, mapping aliases, attributes; gaps are what lies between),
// the live mappings, and revoking one mapping (the client's lease gets the revocation).
import type { FastifyInstance } from "fastify";
import type { Brokerd } from "../brokerd.js";
import {
  COOKIE,
  DEVICE_FILE,
  DEVICE_FILE_ID,
  DEVICE_ID,
  deviceFileView,
  MAPPING,
  mappingView,
  parseU64,
  REVOKE_BODY,
  REVOKED,
  type RevokeBody,
  responses,
  revokedView,
  SESSION_ID,
  TREE_ENTRY,
  treeEntryView,
} from "../views.js";

const filters = {
  type: "object",
  additionalProperties: false,
  properties: { sessionId: SESSION_ID, deviceId: DEVICE_ID },
} as const;
const dfParams = {
  type: "object",
  required: ["deviceFileId"],
  properties: { deviceFileId: DEVICE_FILE_ID },
} as const;
type Filters = { sessionId?: string; deviceId?: string };

export async function deviceFilesRoutes(app: FastifyInstance, opts: { brokerd: Brokerd }): Promise<void> {
  const { brokerd } = opts;

  app.get<{ Querystring: Filters }>(
    "/device-files",
    {
      schema: {
        tags: ["device-files"],
        summary: "List open DeviceFiles, optionally of one session or device",
        querystring: filters,
        response: responses({
          type: "object",
          properties: { deviceFiles: { type: "array", items: DEVICE_FILE } },
        }),
      },
    },
    async (req) => {
      const r = await brokerd.call((c) =>
        c.listDeviceFiles({ sessionId: req.query.sessionId ?? "", deviceId: req.query.deviceId ?? "" }),
      );
      return { deviceFiles: r.deviceFiles.map(deviceFileView) };
    },
  );

  app.get<{ Params: { deviceFileId: string } }>(
    "/device-files/:deviceFileId",
    {
      schema: {
        tags: ["device-files"],
        summary: "A DeviceFile's cookie space: its MapleTree entries (sorted by start) and node structure",
        params: dfParams,
        response: responses(
          {
            type: "object",
            properties: {
              deviceFile: DEVICE_FILE,
              entries: { type: "array", items: TREE_ENTRY },
              depth: { type: "integer", description: "Levels of MapleTree nodes" },
              nodes: { description: "The MapleTree node structure (bigints as decimal strings)" },
            },
          },
          200,
          [404],
        ),
      },
    },
    async (req) => {
      const deviceFileId = parseU64("deviceFileId", req.params.deviceFileId);
      const r = await brokerd.call((c) => c.dumpDeviceFile({ deviceFileId }));
      let nodes: unknown = null;
      try {
        nodes = JSON.parse(r.nodesJson || "null");
      } catch {
        nodes = null;
      }
      return {
        deviceFile: deviceFileView(r.deviceFile),
        entries: r.entries.map(treeEntryView).sort((a, b) => (BigInt(a.start) < BigInt(b.start) ? -1 : 1)),
        depth: r.depth,
        nodes,
      };
    },
  );

  app.get<{ Params: { deviceFileId: string } }>(
    "/device-files/:deviceFileId/mappings",
    {
      schema: {
        tags: ["mappings"],
        summary: "The live mappings of one DeviceFile",
        params: dfParams,
        response: responses(
          { type: "object", properties: { mappings: { type: "array", items: MAPPING } } },
          200,
          [404],
        ),
      },
    },
    async (req) => {
      const deviceFileId = parseU64("deviceFileId", req.params.deviceFileId);
      // DumpDeviceFile answers NOT_FOUND for an unknown id, which the caller should see as 404.
      const dump = await brokerd.call((c) => c.dumpDeviceFile({ deviceFileId }));
      const r = await brokerd.call((c) =>
        c.listMappings({ sessionId: dump.deviceFile?.sessionId ?? "", deviceId: "" }),
      );
      return {
        mappings: r.mappings.filter((m) => m.mapping?.deviceFileId === deviceFileId).map(mappingView),
      };
    },
  );

  app.get<{ Querystring: Filters }>(
    "/mappings",
    {
      schema: {
        tags: ["mappings"],
        summary: "List live mappings, optionally of one session or device",
        querystring: filters,
        response: responses({ type: "object", properties: { mappings: { type: "array", items: MAPPING } } }),
      },
    },
    async (req) => {
      const r = await brokerd.call((c) =>
        c.listMappings({ sessionId: req.query.sessionId ?? "", deviceId: req.query.deviceId ?? "" }),
      );
      return { mappings: r.mappings.filter((m) => m.mapping).map(mappingView) };
    },
  );

  app.post<{ Params: { deviceFileId: string; cookie: string }; Body: RevokeBody }>(
    "/device-files/:deviceFileId/mappings/:cookie/revoke",
    {
      schema: {
        tags: ["mappings"],
        summary:
          "Revoke one mapping: its holder is asked to unmap it (lease event); a delivered mapping's pages stay booked until it releases them or exits, or, with enforce, until brokerd has killed it after graceMs",
        params: {
          type: "object",
          required: ["deviceFileId", "cookie"],
          properties: { deviceFileId: DEVICE_FILE_ID, cookie: COOKIE },
        },
        body: REVOKE_BODY,
        response: responses(REVOKED, 200, [400, 404]),
      },
    },
    async (req) => {
      const deviceFileId = parseU64("deviceFileId", req.params.deviceFileId);
      const cookie = parseU64("cookie", req.params.cookie);
      const r = await brokerd.call((c) =>
        c.revokeMapping({
          deviceFileId,
          cookie,
          reason: req.body?.reason ?? "",
          enforce: req.body?.enforce ?? false,
          graceMs: req.body?.graceMs ?? 0,
        }),
      );
      return revokedView(r.revoked);
    },
  );
}
