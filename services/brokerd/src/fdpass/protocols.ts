// Which protocol a connection on fd.sock speaks: its first frame decides, for its whole life
// (proto/vfiobroker/v1/workload.proto): a WorkloadRequest hello makes it a workload connection
// (fdpass/workload-adapter.ts); anything else is the ticket protocol (fdpass/adapter.ts), unchanged.
// It owns only that choice, per connection; it reads no socket and serves no request itself.

import type { Broker } from "../broker.js";
import type { FdConnectionPeer } from "../sessions/fd-connections.js";
import { FdAdapter, MAX_REQUEST_BYTES } from "./adapter.js";
import type { FdConnection, FdProtocol } from "./transport.js";
import { WorkloadAdapter } from "./workload-adapter.js";

export class FdProtocols implements FdProtocol {
  readonly maxRequestBytes = MAX_REQUEST_BYTES;
  private readonly tickets: FdAdapter;
  private readonly workload: WorkloadAdapter;
  /** Connections whose first frame was read, and which of them speak the workload protocol. */
  private readonly chosen = new WeakMap<FdConnection, "ticket" | "workload">();

  constructor(private readonly broker: Broker) {
    this.tickets = new FdAdapter(broker);
    this.workload = new WorkloadAdapter(broker, this.tickets);
  }

  stopped(): boolean {
    return this.broker.frozen;
  }

  busy(message: string): Uint8Array {
    return this.tickets.busy(message);
  }

  badFrame(e: Error, peer: FdConnectionPeer): Uint8Array {
    return this.tickets.badFrame(e, peer);
  }

  serve(c: FdConnection, frame: Uint8Array): Promise<boolean> {
    const chosen = this.chosen.get(c);
    if (chosen === "workload") return this.workload.serve(c, frame);
    if (chosen === "ticket") return this.tickets.serve(c, frame);
    const hello = WorkloadAdapter.helloOf(frame);
    this.chosen.set(c, hello ? "workload" : "ticket");
    return hello ? this.workload.hello(c, hello) : this.tickets.serve(c, frame);
  }

  closed(c: FdConnection): void {
    if (this.chosen.get(c) === "workload") this.workload.closed(c);
  }
}
