// device-file.ts: owns the client's DeviceFile: one open view of one device with its own cookie space
// (OpenDevice), the regions with their compat cookies, the mappings created through it (on the fd
// channel's batches or through CreateMapping and a ticket), and ReadRegion/WriteRegion in chunks.
// What a map() asks for is map-request.ts's; where an access goes, region-access.ts's; it reaches
// brokerd only through its DeviceFileHost (the BrokerClient), never through a transport. It never
// keeps a Mapping the broker failed to deliver: if the fd channel or mmap fails after the grant,
// the cookie is released again before the error is thrown.
import { closeFd } from "@vfio-broker/native";
import type { BrokerService, OpenDeviceResponse, PromiseClient } from "@vfio-broker/proto";
import {
  attributeFromPb,
  backingFromPb,
  type DeviceFileRegion,
  type DeviceInfo,
  deviceFromPb,
  findRegion,
  type LayoutName,
  layoutFromPb,
  protFromPb,
  regionFromPb,
} from "./convert.js";
import { FdChannelError } from "./errors.js";
import {
  type FdGrantInit,
  type FdReleaseInit,
  type FetchedFd,
  type GrantResult,
  MAX_BATCH_ITEMS,
} from "./fd-channel.js";
import { type MapOptions, type MapRequest, type MapSpec, mapRequest } from "./map-request.js";
import { Mapping, type MappingOwner } from "./mapping.js";
import { type AccessTarget, accessOffset } from "./region-access.js";

export type { MapOptions, MapSpec } from "./map-request.js";
export type { AccessTarget } from "./region-access.js";

/** A spent ticket (its fd may never have arrived): CreateMapping again, with the same request id. */
const RETRY_TICKET = new Set(["UNKNOWN_TICKET", "ALREADY_USED"]);

/** What a DeviceFile needs from the BrokerClient that opened it. */
export interface DeviceFileHost {
  readonly rpc: PromiseClient<typeof BrokerService>;
  readonly fdSocketPath: string;
  readonly maxAccessBytes: number;
  /** Presents a ticket on the client's fd-channel connection. */
  fetchFd(ticket: string): Promise<FetchedFd>;
  /** Runs a BrokerService call and turns its ServiceError into a BrokerClientError. */
  call<T>(method: string, fn: () => Promise<T>, opts?: { idempotent?: boolean }): Promise<T>;
  /** Grants and releases go through the fd channel's fast path (Hello's fd_grants + fd_batches). */
  readonly fdGrants: boolean;
  /** Grants in one fd-channel batch: per grant, its reply and fd, or its error. */
  fdGrant(grants: FdGrantInit[]): Promise<GrantResult[]>;
  /** A release on the fd channel (batched with the next grant or the other releases of this turn). */
  fdRelease(release: FdReleaseInit): Promise<void>;
  deviceFileClosed(df: DeviceFile): void;
  /** CloseDevice on the session's own transport. */
  closeDevice(df: DeviceFile): Promise<void>;
  /** Where ReadRegion/WriteRegion on df go. */
  access(df: DeviceFile): Promise<AccessTarget>;
}

export class DeviceFile implements MappingOwner {
  readonly id: bigint;
  readonly deviceId: string;
  readonly layout: LayoutName;
  readonly device: DeviceInfo;
  /** Every region of the device, with its compat cookie in this DeviceFile's offset space. */
  readonly regions: readonly DeviceFileRegion[];
  readonly #host: DeviceFileHost;
  /**
   * Live mappings by cookie. A map() of the same range, attribute and prot again gets the same
   * cookie from brokerd (one more reference on it) and its own Mapping here, with its own mmap:
   * each release() gives one reference back.
   */
  readonly #mappings = new Map<bigint, Set<Mapping>>();
  #closed = false;
  #revoked = false;

  /** @internal Use BrokerClient.open(). */
  constructor(host: DeviceFileHost, res: OpenDeviceResponse) {
    this.#host = host;
    this.id = res.deviceFileId;
    this.layout = layoutFromPb(res.layout);
    if (!res.device) throw new Error("OpenDevice: the broker's reply has no device");
    this.device = deviceFromPb(res.device);
    this.deviceId = this.device.id;
    this.regions = res.regions
      .filter((rc) => rc.region !== undefined)
      .map((rc) => ({ ...regionFromPb(rc.region!), cookie: rc.cookie }));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** true once the broker revoked the whole device file (drain, device gone, operator). */
  get revoked(): boolean {
    return this.#revoked;
  }

  /** Live mappings (not released, not revoked). */
  get mappings(): Mapping[] {
    return [...this.#mappings.values()].flatMap((set) => [...set]);
  }

  /** A region by index (2), index string ("2") or case-insensitive name ("BAR2", "bar2"). */
  region(nameOrIndex: string | number): DeviceFileRegion {
    const r = findRegion(this.regions, nameOrIndex);
    if (!r) {
      const names = this.regions.map((x) => `${x.name} (${x.index})`).join(", ");
      throw new RangeError(
        `device ${this.deviceId} has no region ${JSON.stringify(nameOrIndex)}; it has ${names}`,
      );
    }
    return r;
  }

  /** CreateMapping + fd channel + mmap. The returned Mapping is live until released or revoked. */
  async map(region: DeviceFileRegion | string | number, opts: MapOptions = {}): Promise<Mapping> {
    this.#checkOpen("map");
    const spec = this.#spec("map", region, opts);
    if (this.#host.fdGrants) return (await this.#mapBatch([spec]))[0]!;
    return this.#mapGrpc(spec);
  }

  /**
   * Several mappings at once, as a workload's start-up wants (every BAR it drives): on the fast
   * path one fd-channel exchange per 32 of them. All or nothing: if one cannot be made, the ones
   * that were are released again and the first error is thrown. Mappings come back in order.
   */
  async mapMany(specs: readonly MapSpec[]): Promise<Mapping[]> {
    this.#checkOpen("mapMany");
    const all = specs.map((x) => this.#spec("mapMany", x.region, x));
    const made: Mapping[] = [];
    try {
      if (this.#host.fdGrants)
        for (let i = 0; i < all.length; i += MAX_BATCH_ITEMS)
          made.push(...(await this.#mapBatch(all.slice(i, i + MAX_BATCH_ITEMS))));
      else for (const x of all) made.push(await this.#mapGrpc(x));
    } catch (e) {
      await Promise.all(made.map((m) => m.release().catch(() => {})));
      throw e;
    }
    return made;
  }

  /** Checks a map() request and turns it into what CreateMapping and FdGrant both carry. */
  #spec(what: string, region: DeviceFileRegion | string | number, opts: MapOptions): MapRequest {
    return mapRequest(what, this.id, typeof region === "object" ? region : this.region(region), opts);
  }

  /**
   * The fast path: the mappings are created and their fds delivered in one fd-channel exchange
   * (with any releases waiting to go). All or nothing, as mapMany.
   */
  async #mapBatch(specs: MapRequest[]): Promise<Mapping[]> {
    const host = this.#host;
    const results = await host.fdGrant(specs.map((x) => x.request));
    const made: Mapping[] = [];
    let error: unknown;
    results.forEach((res, i) => {
      if (res.error) {
        error ??= res.error;
        return;
      }
      const { reply, fd } = res;
      const spec = specs[i]!;
      try {
        // (fromFd closes the fd, whether mmap succeeds or not.)
        made.push(
          Mapping.fromFd(
            this,
            {
              cookie: reply.cookie,
              regionIndex: reply.regionIndex,
              regionName: spec.region.name,
              regionOffset: reply.regionOffset,
              length: Number(reply.length),
              requestedAttribute: spec.attr,
              effectiveAttribute: attributeFromPb(reply.effectiveAttribute),
              fallbackReason: reply.fallbackReason,
              backing: backingFromPb(reply.backing),
              prot: protFromPb(reply.prot),
              mmapOffset: reply.mmapOffset,
            },
            fd,
            spec.keepFd,
          ),
        );
      } catch (e) {
        error ??= e;
        // Do not leave an unmappable cookie behind on the broker.
        host.fdRelease({ deviceFileId: this.id, cookie: reply.cookie }).catch(() => {});
      }
    });
    if (error !== undefined) {
      await Promise.all(made.map((m) => m.release().catch(() => {})));
      throw error;
    }
    for (const m of made) this.#add(m);
    return made;
  }

  /** The gRPC path: CreateMapping, the ticket on the fd channel, mmap. */
  async #mapGrpc({ region: r, attr, keepFd, request }: MapRequest): Promise<Mapping> {
    const host = this.#host;
    let res = await host.call("CreateMapping", () => host.rpc.createMapping(request));
    const m = res.mapping;
    if (!m) throw new Error("CreateMapping: the broker's reply has no mapping");
    let fd: number | undefined;
    try {
      let got: FetchedFd;
      try {
        got = await host.fetchFd(res.ticket);
      } catch (e) {
        // A brokerd killed after it recorded the delivery but before the fd left: the ticket is
        // spent. The same CreateMapping again (same request id) gets the same cookie and a ticket
        // for a fresh fd of it; nothing is granted twice.
        if (!(e instanceof FdChannelError) || !RETRY_TICKET.has(e.status)) throw e;
        res = await host.call("CreateMapping", () => host.rpc.createMapping(request));
        if (res.mapping?.cookie !== m.cookie) throw e;
        got = await host.fetchFd(res.ticket);
      }
      fd = got.fd;
      const reply = got.reply;
      if (reply.cookie !== m.cookie)
        throw new Error(`fd channel: the reply is for cookie ${reply.cookie}, expected ${m.cookie}`);
      if (reply.length !== m.length)
        throw new Error(
          `fd channel: the reply's length ${reply.length} differs from the mapping's ${m.length}`,
        );
      const owned = fd;
      fd = undefined; // Mapping.fromFd closes it, whether mmap succeeds or not
      const mapping = Mapping.fromFd(
        this,
        {
          cookie: m.cookie,
          regionIndex: m.regionIndex,
          regionName: m.regionName || r.name,
          regionOffset: m.regionOffset,
          length: Number(reply.length),
          requestedAttribute: attr,
          effectiveAttribute: attributeFromPb(reply.effectiveAttribute || m.effectiveAttribute),
          fallbackReason: m.fallbackReason,
          backing: backingFromPb(reply.backing || m.backing),
          prot: protFromPb(reply.prot || m.prot),
          mmapOffset: reply.mmapOffset,
        },
        owned,
        keepFd,
      );
      this.#add(mapping);
      return mapping;
    } catch (e) {
      if (fd !== undefined) closeFd(fd);
      // Do not leave an undeliverable cookie behind on the broker.
      await host.rpc.releaseMapping({ deviceFileId: this.id, cookie: m.cookie }).catch(() => {});
      throw e;
    }
  }

  /** ReadRegion: `length` bytes at `offset` in this DeviceFile's space (a cookie plus an offset). */
  async read(offset: bigint, length: number): Promise<Buffer> {
    this.#checkOpen("read");
    const host = this.#host;
    const first = await host.call("ReadRegion", () => host.access(this));
    const max = first.maxAccessBytes > 0 ? first.maxAccessBytes : length;
    const parts: Buffer[] = [];
    for (let done = 0; done < length; ) {
      const n = Math.min(max, length - done);
      const res = await host.call("ReadRegion", async () => {
        const t = await host.access(this);
        const at = this.#target(t, offset + BigInt(done), n, false);
        return t.rpc.readRegion({ deviceFileId: t.deviceFileId, offset: at, length: n });
      });
      parts.push(Buffer.from(res.data));
      done += n;
    }
    return Buffer.concat(parts);
  }

  /** WriteRegion: `data` at `offset` in this DeviceFile's space. Returns the bytes written. */
  async write(offset: bigint, data: Uint8Array): Promise<number> {
    this.#checkOpen("write");
    const host = this.#host;
    const first = await host.call("WriteRegion", () => host.access(this));
    const max = first.maxAccessBytes > 0 ? first.maxAccessBytes : data.length;
    let written = 0;
    for (let done = 0; done < data.length; ) {
      const chunk = data.subarray(done, done + max);
      const res = await host.call("WriteRegion", async () => {
        const t = await host.access(this);
        const at = this.#target(t, offset + BigInt(done), chunk.length, true);
        return t.rpc.writeRegion({ deviceFileId: t.deviceFileId, offset: at, data: chunk });
      });
      written += res.written;
      done += chunk.length;
    }
    return written;
  }

  /** The offset to send to `t` (region-access.ts): this DeviceFile's mappings, one per cookie. */
  #target(t: AccessTarget, offset: bigint, length: number, write: boolean): bigint {
    const mappings = [...this.#mappings.values()].flatMap((set) => [...set].slice(0, 1));
    return accessOffset(t, mappings, (i) => this.region(i).cookie, offset, length, write);
  }

  /** Unmaps every mapping and closes the device file on the broker (releasing them there). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of this.mappings) m.markReleased();
    this.#mappings.clear();
    this.#host.deviceFileClosed(this);
    if (this.#revoked) return;
    await this.#host.closeDevice(this);
  }

  /** @internal MappingOwner: ReleaseMapping for a mapping the client released. */
  async releaseMapping(mapping: Mapping): Promise<void> {
    this.#remove(mapping);
    if (this.#closed) return;
    const host = this.#host;
    if (host.fdGrants) {
      await host.fdRelease({ deviceFileId: this.id, cookie: mapping.cookie });
      return;
    }
    await host.call(
      "ReleaseMapping",
      () => host.rpc.releaseMapping({ deviceFileId: this.id, cookie: mapping.cookie }),
      { idempotent: true },
    );
  }

  /**
   * @internal A Revocation for this device file arrived: cookie 0 takes the whole device file, any
   * other cookie one mapping. Unmaps what it takes and returns the mappings it revoked.
   */
  revoke(cookie: bigint, reason: string): Mapping[] {
    const taken: Mapping[] = [];
    if (cookie === 0n) {
      this.#revoked = true;
      this.#closed = true;
      for (const m of this.mappings) {
        m.markRevoked(reason);
        taken.push(m);
      }
      this.#mappings.clear();
      this.#host.deviceFileClosed(this);
    } else {
      // A revocation takes the cookie, with every reference on it.
      for (const m of this.#mappings.get(cookie) ?? []) {
        m.markRevoked(reason);
        taken.push(m);
      }
      this.#mappings.delete(cookie);
    }
    return taken;
  }

  #add(m: Mapping): void {
    const set = this.#mappings.get(m.cookie);
    if (set) set.add(m);
    else this.#mappings.set(m.cookie, new Set([m]));
  }

  #remove(m: Mapping): void {
    const set = this.#mappings.get(m.cookie);
    if (!set?.delete(m)) return;
    if (set.size === 0) this.#mappings.delete(m.cookie);
  }

  /** @internal The session is gone (lease lost): every mapping is revoked locally. */
  revokeAll(reason: string): Mapping[] {
    const taken = this.revoke(0n, reason);
    return taken;
  }

  #checkOpen(what: string): void {
    if (this.#revoked)
      throw new Error(
        `${what}: device file ${this.id} of ${this.deviceId} was revoked by the broker; open the device again`,
      );
    if (this.#closed)
      throw new Error(`${what}: device file ${this.id} of ${this.deviceId} is closed; open the device again`);
  }
}
