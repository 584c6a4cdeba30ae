// tickets.ts: real, redeemable tickets for the fd-channel fuzzer, made the way a normal client
// makes them (Hello, OpenDevice, CreateMapping of one page). With them the fuzzer reaches the
// replies that carry an fd, double redemption and closing while an fd is on its way. The session
// is rotated before it nears its mapping quota, and its mappings are released first, as a client
// that has unmapped them would: a delivered mapping whose session just ends stays booked until this
// process exits (brokerd cannot know that the fuzzer closed the fds it received without mapping).
import { Attribute, BrokerService, createClient, Layout, type PromiseClient, Prot } from "@vfio-broker/proto";

const TICKETS_PER_SESSION = 32;

export class TicketSource {
  #client: PromiseClient<typeof BrokerService> | null = null;
  #deviceFileId = 0n;
  #regionIndex = 0;
  #pageSize = 4096n;
  #issued = 0;
  /** Cookies of the mappings this session created (released before it closes). */
  #cookies: bigint[] = [];
  made = 0;

  constructor(readonly socket: string) {}

  async #session(): Promise<PromiseClient<typeof BrokerService>> {
    if (this.#client && this.#issued < TICKETS_PER_SESSION) return this.#client;
    await this.#releaseAll();
    this.close();
    const c = createClient(BrokerService, `unix:${this.socket}`, undefined, {
      "grpc.use_local_subchannel_pool": 1,
    });
    try {
      const hello = await c.hello({ clientName: "fuzz-tickets", clientVersion: "0" }, { timeoutMs: 5000 });
      this.#pageSize = BigInt(hello.capabilities?.pageSize || 4096);
      const list = await c.listDevices({}, { timeoutMs: 5000 });
      const dev = list.devices.find((d) => d.regions.some((r) => r.mappable && r.size >= this.#pageSize));
      if (!dev) throw new Error("no device has a mappable region of at least one page");
      const open = await c.openDevice({ deviceId: dev.id, layout: Layout.COMPACT }, { timeoutMs: 5000 });
      const region = open.regions.find(
        (r) =>
          r.region?.mappable && r.region.size >= this.#pageSize && r.region.attributes.includes(Attribute.UC),
      )?.region;
      if (!region) throw new Error(`${dev.id} has no UC-mappable region of at least one page`);
      this.#deviceFileId = open.deviceFileId;
      this.#regionIndex = region.index;
    } catch (e) {
      c.close();
      throw e;
    }
    this.#client = c;
    this.#issued = 0;
    return c;
  }

  /** A fresh ticket for a one-page UC mapping, bound to this process's identity. */
  async fresh(): Promise<string> {
    const c = await this.#session();
    this.#issued++;
    const r = await c.createMapping(
      {
        deviceFileId: this.#deviceFileId,
        regionIndex: this.#regionIndex,
        offset: 0n,
        length: this.#pageSize,
        attribute: Attribute.UC,
        prot: Prot.READ_WRITE,
      },
      { timeoutMs: 5000 },
    );
    this.made++;
    if (r.mapping) this.#cookies.push(r.mapping.cookie);
    return r.ticket;
  }

  /** Releases every mapping of the current session (redeemed or not; already gone is fine). */
  async #releaseAll(): Promise<void> {
    const c = this.#client;
    const cookies = this.#cookies.splice(0);
    if (!c) return;
    for (const cookie of cookies)
      await c
        .releaseMapping({ deviceFileId: this.#deviceFileId, cookie }, { timeoutMs: 5000 })
        .catch(() => {});
  }

  close(): void {
    this.#client?.close();
    this.#client = null;
    this.#cookies = [];
  }
}
