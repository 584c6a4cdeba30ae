// Which protocol a connection on fd.sock speaks: its first frame decides, for its whole life
// (proto/vfiobroker/v1/workload.proto): a WorkloadRequest hello makes it a workload connection
// (fdpass/workload-adapter.ts); anything else is the ticket protocol (fdpass/adapter.ts), unchanged.
// A WorkloadRequest sent on a ticket connection (a workload request before any hello, or a hello
// after a ticket frame) is answered FD_STATUS_BAD_REQUEST saying so, where it would otherwise read
// as an FdRequest without a ticket ("no such ticket", which tells a workload client nothing).
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
    if (chosen === "ticket") return this.ticket(c, frame, false);
    const hello = WorkloadAdapter.helloOf(frame);
    this.chosen.set(c, hello ? "workload" : "ticket");
    return hello ? this.workload.hello(c, hello) : this.ticket(c, frame, true);
  }

  /** A frame on a ticket connection; a WorkloadRequest there is told why it is not served. */
  private async ticket(c: FdConnection, frame: Uint8Array, first: boolean): Promise<boolean> {
    // An FdRequest's fields are 1-15, so its first byte is below 0x80; a WorkloadRequest's (16 on)
    // is not: only those few frames are decoded twice.
    const kind = (frame[0] ?? 0) & 0x80 ? WorkloadAdapter.kindOf(frame) : undefined;
    if (kind === undefined) return this.tickets.serve(c, frame);
    const why =
      kind === "hello"
        ? "a WorkloadRequest hello must be the first frame of its connection, and this connection's first frame was a ticket-protocol FdRequest"
        : `a WorkloadRequest (${kind}) ${first ? "as the first frame" : "on a connection whose first frame was a ticket-protocol FdRequest"}: a workload connection's first frame is a WorkloadRequest hello`;
    await c.reply(this.tickets.badRequest(`${why}; open a new connection and send the hello first`, c.peer));
    return true;
  }

  closed(c: FdConnection): void {
    if (this.chosen.get(c) === "workload") this.workload.closed(c);
  }
}
