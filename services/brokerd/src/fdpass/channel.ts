// The fd channel (docs/design.md): the fd-passing transport (fdpass/transport.ts) speaking the
// FdRequest/FdReply protocol (fdpass/adapter.ts, proto/vfiobroker/v1/fdchannel.proto) or the
// workload protocol (fdpass/workload-adapter.ts, workload.proto), chosen per connection by its
// first frame (fdpass/protocols.ts), over the core: connections admitted and charged by sessions/fd-connections.ts, grants made by the Broker
// and grants/fd-batch.ts. It only composes them; another protocol over the same transport is
// another adapter composed the same way.

import type { Broker } from "../broker.js";
import { FdConnections } from "../sessions/fd-connections.js";
import { FdProtocols } from "./protocols.js";
import { FdTransport, type FdTransportOptions } from "./transport.js";

export { DEFAULT_MAX_CONNECTIONS } from "../sessions/fd-connections.js";
export { MAX_BATCH_ITEMS, MAX_REQUEST_BYTES } from "./adapter.js";
export {
  DEFAULT_IDLE_MS,
  UNREAD_BYTES_PER_CONNECTION,
  UNREAD_FDS_PER_CONNECTION,
} from "./transport.js";

export interface FdChannelOptions extends FdTransportOptions {
  /** Connections served at once over all identities (each is one fd in brokerd). */
  maxConnections?: number;
  /** Percent of maxConnections kept for tenants below their minimum (grants/fair-share.ts). */
  tenantReservePercent?: number;
}

export class FdChannel {
  /** The channel's connections as the quotas see them (admission, fair shares, unread fds). */
  readonly accounts: FdConnections;
  private readonly transport: FdTransport;

  constructor(broker: Broker, opts: FdChannelOptions) {
    this.accounts = new FdConnections(broker, opts);
    this.transport = new FdTransport(this.accounts, new FdProtocols(broker), opts);
  }

  /** Open connections, by tenant: brokerd's fd-channel cap shared fairly. */
  get shares() {
    return this.accounts.shares;
  }

  /** A hand-over froze brokerd: new connections wait in the backlog (FdTransport.pauseAccepting). */
  pauseAccepting(): void {
    this.transport.pauseAccepting();
  }

  resumeAccepting(): void {
    this.transport.resumeAccepting();
  }

  /** How many connections are open now (for tests and metrics). */
  get connections(): number {
    return this.transport.connectionCount;
  }

  /** The listening fd (for the fdstore and hand-over). */
  get listenFd(): number {
    return this.transport.listenFd;
  }

  /** keepPath: the socket lives on (fdstore, the next brokerd): its file stays. */
  close(opts: { keepPath?: boolean } = {}): void {
    this.transport.close(opts);
  }
}
