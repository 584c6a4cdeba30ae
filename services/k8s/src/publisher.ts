// Publishes this node's ResourceSlice: creates it, or updates it (bumping the pool generation)
// when brokerd's devices changed, retrying once on a conflict. Owns the create-or-update
// sequence against the API server; what the slice says is slice.ts's.
import type { Device } from "@vfio-broker/proto";
import { ApiError, type ApiServer } from "./apiserver.js";
import { sameDevices, sliceName, sliceSpec } from "./slice.js";

/** What publish() did. */
export type PublishOutcome = "created" | "updated" | "unchanged";

export async function publishSlice(
  api: ApiServer,
  nodeName: string,
  devices: Device[],
): Promise<PublishOutcome> {
  const name = sliceName(nodeName);
  for (let attempt = 0; ; attempt++) {
    const current = await api.getSlice(name);
    try {
      if (!current) {
        await api.createSlice({
          apiVersion: "resource.k8s.io/v1",
          kind: "ResourceSlice",
          metadata: { name },
          spec: sliceSpec(nodeName, devices, 1),
        });
        return "created";
      }
      const spec = current.spec as Record<string, unknown> | undefined;
      const gen = Number((spec?.pool as { generation?: number } | undefined)?.generation ?? 0);
      const next = sliceSpec(nodeName, devices, gen);
      if (sameDevices(spec, next)) return "unchanged";
      const meta = current.metadata as Record<string, unknown>;
      await api.updateSlice(name, {
        apiVersion: "resource.k8s.io/v1",
        kind: "ResourceSlice",
        metadata: { name, resourceVersion: meta.resourceVersion },
        spec: sliceSpec(nodeName, devices, gen + 1),
      });
      return "updated";
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 409) || attempt >= 1) throw e;
    }
  }
}
