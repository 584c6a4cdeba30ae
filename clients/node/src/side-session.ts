// side-session.ts: owns the gRPC session a workload-protocol client opens, lazily, for the calls the
// workload protocol lacks (ReadRegion/WriteRegion, GetDevice, SetMappingAttribute, anything through
// BrokerClient.rpc). brokerd binds a session to its connection, so this is a session of its own,
// opened with its own Hello on the first such call (never before: a client that only maps never has
// one) and counted against the identity's sessions quota like any other; it has no Lease (events
// come on the workload connection) and ends with close(). A DeviceFile of the workload session is
// reached through a "shadow" device file of the same device and layout opened in this session on
// first use (the same region cookies: the layout is computed from the device alone); its mappings
// are the workload session's, so DeviceFile translates a mapping cookie to region space itself.
// After a brokerd restart it resumes with its own token at its next use. It decides no retry: its
// errors go to the BrokerClient's retry loop like any gRPC call's.
import type { BrokerService, HelloResponse, PromiseClient } from "@vfio-broker/proto";
import type { LayoutName } from "./convert.js";
import { layoutToPb } from "./convert.js";
import { BrokerClientError, toClientError } from "./errors.js";

type Rpc = PromiseClient<typeof BrokerService>;

/** What the side session needs of a workload DeviceFile to open its shadow. */
export interface ShadowSource {
  readonly id: bigint;
  readonly deviceId: string;
  readonly layout: LayoutName;
  readonly regions: readonly { index: number; cookie: bigint }[];
}

export class SideSession {
  #raw: Rpc | undefined;
  #rpc: Rpc | undefined;
  #hello: HelloResponse | undefined;
  #opening: Promise<Rpc> | undefined;
  /** brokerd restarted since the Hello: the next use says Hello again with the resume token. */
  #stale = false;
  #closed = false;
  /** Shadow device-file ids, by the workload device file's id. */
  readonly #shadows = new Map<bigint, Promise<bigint>>();

  constructor(
    private readonly socket: string,
    private readonly clientName: string,
    private readonly timeoutMs: number,
  ) {}

  /** The last Hello's answer (undefined until the side session was first needed). */
  get hello(): HelloResponse | undefined {
    return this.#hello;
  }

  /** The session-bound client of the side session, said Hello to (or resumed) first if need be. */
  rpc(): Promise<Rpc> {
    if (this.#closed) return Promise.reject(new Error("the client is closed; connect() again"));
    if (this.#rpc && !this.#stale) return Promise.resolve(this.#rpc);
    this.#opening ??= this.#open().finally(() => {
      this.#opening = undefined;
    });
    return this.#opening;
  }

  async #open(): Promise<Rpc> {
    const token = this.#stale ? (this.#hello?.resumeToken ?? "") : "";
    this.#raw?.close();
    // grpc-js is loaded here, at the first gRPC-only call, never before.
    const { brokerChannel, sessionBound } = await import("./grpc-channel.js");
    // Its own subchannel: one connection, one session (grpc-js would share one between clients).
    const raw = brokerChannel(this.socket);
    this.#raw = raw;
    let hello: HelloResponse;
    try {
      hello = await raw.hello(
        { clientName: `${this.clientName} (grpc)`, clientVersion: "0.1.0", resumeToken: token },
        { timeoutMs: this.timeoutMs },
      );
    } catch (e) {
      raw.close();
      this.#raw = undefined;
      throw toClientError(e, "Hello");
    }
    // Not resumed (a fresh session): the shadows were released with the old one.
    if (!hello.resumed) this.#shadows.clear();
    this.#hello = hello;
    this.#stale = false;
    this.#rpc = sessionBound(raw, () => hello.sessionId);
    return this.#rpc;
  }

  /** The id of df's shadow in the side session, opened on first use. */
  shadow(df: ShadowSource): Promise<bigint> {
    let id = this.#shadows.get(df.id);
    if (!id) {
      id = this.#openShadow(df);
      this.#shadows.set(df.id, id);
      id.catch(() => this.#shadows.delete(df.id));
    }
    return id;
  }

  async #openShadow(df: ShadowSource): Promise<bigint> {
    const rpc = await this.rpc();
    const res = await rpc.openDevice({ deviceId: df.deviceId, layout: layoutToPb(df.layout) });
    const mine = new Map(df.regions.map((r) => [r.index, r.cookie]));
    for (const r of res.regions)
      if (r.region && mine.get(r.region.index) !== r.cookie) {
        void rpc.closeDevice({ deviceFileId: res.deviceFileId }).catch(() => {});
        throw new BrokerClientError(
          "INTERNAL",
          `device file ${df.id}: the gRPC session's view of ${df.deviceId} has other region cookies; use transport "grpc"`,
        );
      }
    return res.deviceFileId;
  }

  /** The workload device file is closed or revoked: its shadow (if any) is closed too. */
  forget(dfId: bigint): void {
    const id = this.#shadows.get(dfId);
    if (!id) return;
    this.#shadows.delete(dfId);
    void id.then((deviceFileId) => this.#rpc?.closeDevice({ deviceFileId })).catch(() => {}); // the side session may be gone: its shadows went with it
  }

  /** brokerd restarted: the next use resumes the side session (a Hello with its token). */
  restarted(): void {
    if (this.#hello) this.#stale = true;
  }

  /** Ends the side session (its shadows are released with it). Idempotent. */
  close(): void {
    this.#closed = true;
    this.#raw?.close();
    this.#raw = undefined;
    this.#rpc = undefined;
    this.#shadows.clear();
  }
}

/**
 * A BrokerService client whose unary calls run on the side session (opened at the first call);
 * close() ends the side session. Lease streams are not offered (the workload connection is the lease).
 */
export function lazyRpc(side: SideSession): Rpc {
  return new Proxy({} as Rpc, {
    get(_t, prop) {
      if (prop === "close") return () => side.close();
      if (prop === "then") return undefined;
      if (prop === "lease")
        return () => {
          throw new Error("a workload-protocol client has no gRPC Lease: its events come on its connection");
        };
      return (req: unknown, opts?: unknown) =>
        side
          .rpc()
          .then((rpc) =>
            (rpc as unknown as Record<string, (a: unknown, b: unknown) => unknown>)[String(prop)]!(req, opts),
          );
    },
  });
}
