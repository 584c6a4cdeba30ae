// /api/v1/devices: every device of every backend with its regions, health and mode, the drain /
// undrain controls (drain revokes everything on the device and refuses new device files) and the
// mode switch (refused by brokerd, naming what holds the device, while anything does).
// Simulated-device hotplug (/api/v1/sim-devices) lives here too: it is a device operation.
import type { FastifyInstance } from "fastify";
import type { Brokerd } from "../brokerd.js";
import { HttpError } from "../brokerd.js";
import { quoted } from "../quote.js";
import {
  DEVICE,
  DEVICE_ID,
  deviceView,
  EMPTY_BODY,
  MODE_NUMBER,
  modeName,
  parseU64,
  REASON_BODY,
  REVOKED,
  responses,
  revokedView,
} from "../views.js";

const TAGS = ["devices"];
const params = { type: "object", required: ["deviceId"], properties: { deviceId: DEVICE_ID } } as const;

export async function devicesRoutes(app: FastifyInstance, opts: { brokerd: Brokerd }): Promise<void> {
  const { brokerd } = opts;

  app.get(
    "/devices",
    {
      schema: {
        tags: TAGS,
        summary: "List every device (regardless of policy) with regions and health",
        response: responses({ type: "object", properties: { devices: { type: "array", items: DEVICE } } }),
      },
    },
    async () => {
      const r = await brokerd.call((c) => c.listAllDevices({}));
      return { devices: r.devices.map(deviceView) };
    },
  );

  app.get<{ Params: { deviceId: string } }>(
    "/devices/:deviceId",
    {
      schema: {
        tags: TAGS,
        summary: "One device",
        params,
        response: responses({ type: "object", properties: { device: DEVICE } }, 200, [404]),
      },
    },
    async (req) => {
      const r = await brokerd.call((c) => c.listAllDevices({}));
      const d = r.devices.find((x) => x.id === req.params.deviceId);
      if (!d)
        throw new HttpError(
          404,
          `no device ${quoted(req.params.deviceId)}; GET /api/v1/devices lists them (${r.devices.map((x) => x.id).join(", ") || "none"})`,
        );
      return { device: deviceView(d) };
    },
  );

  app.post<{ Params: { deviceId: string }; Body: { reason?: string } | undefined }>(
    "/devices/:deviceId/drain",
    {
      schema: {
        tags: TAGS,
        summary: "Drain a device: revoke every mapping and device file on it, refuse new ones until undrain",
        params,
        body: REASON_BODY,
        response: responses(REVOKED, 200, [404]),
      },
    },
    async (req) => {
      const { deviceId } = req.params;
      const r = await brokerd.call((c) => c.drainDevice({ deviceId, reason: req.body?.reason ?? "" }));
      return revokedView(r.revoked);
    },
  );

  app.post<{ Params: { deviceId: string } }>(
    "/devices/:deviceId/undrain",
    {
      schema: {
        tags: TAGS,
        summary: "Make a drained device available again",
        params,
        body: EMPTY_BODY,
        response: responses(
          { type: "object", properties: { deviceId: DEVICE_ID, health: { type: "string" } } },
          200,
          [404],
        ),
      },
    },
    async (req) => {
      const { deviceId } = req.params;
      await brokerd.call((c) => c.undrainDevice({ deviceId }));
      return { deviceId, health: "healthy" };
    },
  );

  app.post<{ Params: { deviceId: string }; Body: { mode: string; reason?: string } }>(
    "/devices/:deviceId/mode",
    {
      schema: {
        tags: TAGS,
        summary:
          "Serve a device in another mode (sysfs-wc or vfio) until brokerd restarts; refused (409, naming the holders) while any device file or held mapping is on it",
        params,
        body: {
          type: "object",
          additionalProperties: false,
          required: ["mode"],
          properties: {
            mode: { type: "string", enum: ["sysfs-wc", "vfio"] },
            reason: { type: "string", maxLength: 256 },
          },
        },
        response: responses(
          { type: "object", properties: { device: DEVICE, previousMode: { type: "string" } } },
          200,
          [404, 409],
        ),
      },
    },
    async (req) => {
      const { deviceId } = req.params;
      const mode = MODE_NUMBER[req.body.mode]!;
      const r = await brokerd.call((c) => c.setDeviceMode({ deviceId, mode, reason: req.body.reason ?? "" }));
      return { device: r.device ? deviceView(r.device) : undefined, previousMode: modeName(r.previousMode) };
    },
  );

  app.post<{
    Body: { deviceId: string; regions: { index: number; size: string; prefetchable?: boolean }[] };
  }>(
    "/sim-devices",
    {
      schema: {
        tags: TAGS,
        summary: "Hot-plug a simulated device (sim backend only)",
        body: {
          type: "object",
          additionalProperties: false,
          required: ["deviceId", "regions"],
          properties: {
            deviceId: DEVICE_ID,
            regions: {
              type: "array",
              minItems: 1,
              maxItems: 9,
              items: {
                type: "object",
                additionalProperties: false,
                required: ["index", "size"],
                properties: {
                  index: { type: "integer", minimum: 0, maximum: 8, description: "VFIO region index" },
                  size: {
                    type: "string",
                    pattern: "^[1-9][0-9]{0,19}$",
                    description: "Bytes (decimal string)",
                  },
                  prefetchable: { type: "boolean" },
                },
              },
            },
          },
        },
        response: responses({ type: "object", properties: { device: DEVICE } }, 201, [409]),
      },
    },
    async (req, reply) => {
      const regions = req.body.regions.map((r) => ({
        index: r.index,
        size: parseU64("size", r.size),
        prefetchable: r.prefetchable ?? false,
      }));
      const r = await brokerd.call((c) => c.addSimDevice({ deviceId: req.body.deviceId, regions }));
      reply.code(201);
      return { device: r.device ? deviceView(r.device) : undefined };
    },
  );

  app.delete<{ Params: { deviceId: string } }>(
    "/sim-devices/:deviceId",
    {
      schema: {
        tags: TAGS,
        summary: "Hot-unplug a simulated device: everything on it is revoked (reason device-gone)",
        params,
        response: responses(REVOKED, 200, [404, 409]),
      },
    },
    async (req) => {
      const r = await brokerd.call((c) => c.removeSimDevice({ deviceId: req.params.deviceId }));
      return revokedView(r.revoked);
    },
  );
}
