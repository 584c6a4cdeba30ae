// The standard grpc.health.v1.Health service. "" is brokerd as a whole; the named services are
// vfiobroker.v1.BrokerService and vfiobroker.v1.AdminService. NOT_SERVING while draining.
import type * as grpc from "@grpc/grpc-js";
import { HealthCheckResponse_ServingStatus as Status } from "@vfio-broker/proto";
import { notFound, quoted } from "../errors.js";
import { toStatus, unary } from "./status.js";

export class HealthState {
  private readonly statuses = new Map<string, Status>();
  private readonly watchers = new Set<{ service: string; push: (s: Status) => void }>();

  constructor(services: string[]) {
    for (const s of ["", ...services]) this.statuses.set(s, Status.SERVING);
  }

  set(service: string, status: Status): void {
    this.statuses.set(service, status);
    for (const w of this.watchers) if (w.service === service) w.push(status);
  }

  setAll(status: Status): void {
    for (const s of this.statuses.keys()) this.set(s, status);
  }

  impl(): grpc.UntypedServiceImplementation {
    return {
      check: unary((req: { service: string }) => {
        const status = this.statuses.get(req.service);
        if (status === undefined) throw notFound(`unknown service ${quoted(req.service)}`);
        return { status };
      }),
      list: unary(() => ({
        statuses: Object.fromEntries([...this.statuses].map(([k, v]) => [k, { status: v }])),
      })),
      watch: (call: grpc.ServerWritableStream<{ service: string }, { status: Status }>) => {
        const service = call.request.service;
        const w = { service, push: (status: Status) => call.write({ status }) };
        w.push(this.statuses.get(service) ?? Status.SERVICE_UNKNOWN);
        this.watchers.add(w);
        call.on("cancelled", () => this.watchers.delete(w));
        call.on("close", () => this.watchers.delete(w));
        call.on("error", (e) => {
          this.watchers.delete(w);
          void toStatus(e);
        });
      },
    };
  }
}
