// The DRA kubelet plugin's two sockets: the registration socket (pluginregistration.Registration,
// in the kubelet's plugins_registry directory), and the plugin socket it names
// (k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin). Owns the gRPC framing: decoding, the per-call bound,
// and one response entry per requested claim; the work is dra-driver.ts's.
import type * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { isUndecodable, serviceDefinition } from "@vfio-broker/proto";
import { dra, pluginregistration } from "@vfio-broker/proto/kubelet";
import type { DraDriver } from "./dra-driver.js";
import { serveUnix, stopServer } from "./grpc-unix.js";
import { DRA_SERVICE_VERSION, DRIVER, MAX_CLAIMS_PER_CALL } from "./names.js";

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

/** A unary handler answering INVALID_ARGUMENT for undecodable requests and INTERNAL for throws. */
function unary<Req, Res>(fn: (req: Req) => Promise<Res> | Res): Unary<Req, Res> {
  return (call, cb) => {
    const req = call.request as unknown;
    if (isUndecodable(req)) {
      cb({ code: status.INVALID_ARGUMENT, details: req.message });
      return;
    }
    Promise.resolve()
      .then(() => fn(req as Req))
      .then(
        (res) => cb(null, res),
        (e: unknown) =>
          cb({
            code: (e as { code?: number }).code ?? status.INTERNAL,
            details: e instanceof Error ? e.message : String(e),
          }),
      );
  };
}

function checkCount(n: number): void {
  if (n > MAX_CLAIMS_PER_CALL) {
    throw Object.assign(new Error(`${n} claims in one call; at most ${MAX_CLAIMS_PER_CALL}`), {
      code: status.INVALID_ARGUMENT,
    });
  }
}

export interface RegistrationState {
  /** The kubelet's last NotifyRegistrationStatus, or undefined before it called. */
  registered?: boolean;
  error?: string;
}

export interface DraSockets {
  registration: RegistrationState;
  stop(): Promise<void>;
}

/** Serves the DRA plugin on `pluginSocket` and its registration on `registrationSocket`. */
export async function serveDra(
  driver: DraDriver,
  registrationSocket: string,
  pluginSocket: string,
): Promise<DraSockets> {
  const state: RegistrationState = {};
  const plugin = await serveUnix(pluginSocket, (s) =>
    s.addService(serviceDefinition(dra.DRAPlugin), {
      nodePrepareResources: unary(async (req: dra.NodePrepareResourcesRequest) => {
        checkCount(req.claims.length);
        const claims: Record<string, { devices: object[]; error: string }> = {};
        await Promise.all(
          req.claims.map(async (c) => {
            const r = await driver.prepare(c);
            claims[c.uid] =
              "error" in r
                ? { devices: [], error: r.error }
                : {
                    error: "",
                    devices: r.claim.devices.map((d) => ({
                      requestNames: [d.request],
                      poolName: d.pool,
                      deviceName: d.device,
                      cdiDeviceIds: r.claim.cdiDeviceIds,
                    })),
                  };
          }),
        );
        return { claims };
      }),
      nodeUnprepareResources: unary(async (req: dra.NodeUnprepareResourcesRequest) => {
        checkCount(req.claims.length);
        const claims: Record<string, { error: string }> = {};
        await Promise.all(
          req.claims.map(async (c) => (claims[c.uid] = { error: await driver.unprepare(c) })),
        );
        return { claims };
      }),
    }),
  );
  const registration = await serveUnix(registrationSocket, (s) =>
    s.addService(serviceDefinition(pluginregistration.Registration), {
      getInfo: unary(() => ({
        type: "DRAPlugin",
        name: DRIVER,
        endpoint: pluginSocket,
        supportedVersions: [DRA_SERVICE_VERSION],
      })),
      notifyRegistrationStatus: unary((req: pluginregistration.RegistrationStatus) => {
        state.registered = req.pluginRegistered;
        state.error = req.error.slice(0, 500);
        return {};
      }),
    }),
  );
  return {
    registration: state,
    stop: async () => {
      await stopServer(registration);
      await stopServer(plugin);
    },
  };
}
