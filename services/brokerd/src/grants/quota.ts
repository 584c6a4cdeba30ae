// QuotaBook: what each identity holds, across all of its sessions (docs/design.md §6.2: quotas per
// identity). An identity is charged under several keys (its uid, and its container when known,
// see identity/container.ts); a charge must fit under every key, so neither many sessions of one
// uid nor many uids in one container escape the limit. Pure bookkeeping: the Broker decides the
// limits (from the policy) and when to charge and refund. Keys with nothing charged are dropped,
// so the book's size is bounded by what is live.
import { formatBytes } from "../devices/regions.js";
import { exhausted } from "../errors.js";

export type CountResource =
  | "sessions"
  | "fdConnections"
  | "pendingMappings"
  | "deviceFiles"
  | "mappings"
  | "unreadFds";
export type QuotaResource = CountResource | "bytes";

export type Usage = Record<CountResource, number> & { bytes: bigint };

const NOUNS: Record<QuotaResource, string> = {
  sessions: "sessions",
  fdConnections: "fd-channel connections",
  pendingMappings: "mappings waiting for their fd",
  deviceFiles: "open device files",
  mappings: "live mappings",
  bytes: "bytes mapped",
  unreadFds: "fds in fd-channel replies not read yet",
};

/** What to tell a client about a limit it hit, per resource. */
const ADVICE: Record<QuotaResource, string> = {
  sessions: "close a connection first",
  fdConnections:
    "use fewer connections: one fd-channel connection per process for tickets, and one per workload-protocol (libvfio-broker) session, so share a session between threads instead of opening one each; or ask the operator to raise the cap",
  pendingMappings: "fetch the fds of the mappings you created (or release them) first",
  deviceFiles: "close a device file first",
  mappings: "release a mapping first",
  bytes: "release mappings or ask for less",
  unreadFds: "read the replies on your fd-channel connections",
};

function empty(): Usage {
  return {
    sessions: 0,
    fdConnections: 0,
    pendingMappings: 0,
    deviceFiles: 0,
    mappings: 0,
    unreadFds: 0,
    bytes: 0n,
  };
}

function isEmpty(u: Usage): boolean {
  return (
    u.sessions === 0 &&
    u.fdConnections === 0 &&
    u.pendingMappings === 0 &&
    u.deviceFiles === 0 &&
    u.mappings === 0 &&
    u.unreadFds === 0 &&
    u.bytes === 0n
  );
}

export class QuotaBook {
  private readonly book = new Map<string, Usage>();

  /** What key holds now (all zeros when nothing). */
  usage(key: string): Readonly<Usage> {
    return this.book.get(key) ?? empty();
  }

  /** Number of keys that hold anything (bounded by what is live). */
  get size(): number {
    return this.book.size;
  }

  /**
   * Charges amount of resource to every key, or throws RESOURCE_EXHAUSTED (charging nothing) when
   * any key would go over limit. `who` names the identity in the message.
   */
  charge<R extends QuotaResource>(
    keys: readonly string[],
    resource: R,
    amount: R extends "bytes" ? bigint : number,
    limit: R extends "bytes" ? bigint : number,
    who: string,
  ): void {
    // Indexed loops and one arithmetic site per type: this runs several times per grant, and the
    // for-of over keys with one site for bigints and numbers allocated per step (heap profile).
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      const u = this.book.get(k);
      const over =
        resource === "bytes"
          ? (u === undefined ? 0n : u.bytes) + (amount as bigint) > (limit as bigint)
          : (u === undefined ? 0 : u[resource as CountResource]) + (amount as number) > (limit as number);
      if (over)
        this.refuse(k, resource, u?.[resource] ?? (resource === "bytes" ? 0n : 0), amount, limit, who);
    }
    this.add(keys, resource, amount);
  }

  /** Throws RESOURCE_EXHAUSTED: key k holds `held` of resource, and amount more would pass limit. */
  private refuse(
    k: string,
    resource: QuotaResource,
    held: number | bigint,
    amount: number | bigint,
    limit: number | bigint,
    who: string,
  ): never {
    const scope = k.startsWith("container:") ? `the container of ${who}` : who;
    const what =
      resource === "bytes"
        ? `${formatBytes(held as bigint)} mapped of the ${formatBytes(limit as bigint)} its quota allows (this request adds ${formatBytes(amount as bigint)})`
        : `${held} ${NOUNS[resource]} of the ${limit} its quota allows`;
    throw exhausted(
      `${scope} has ${what}, across all of its sessions; ${ADVICE[resource]}`,
      `limit:${resource}`,
    );
  }

  /**
   * Books what is already granted, with no limit: a restarted brokerd finds it in its state store
   * (a lowered quota never takes back what was given).
   */
  restore<R extends QuotaResource>(
    keys: readonly string[],
    resource: R,
    amount: R extends "bytes" ? bigint : number,
  ): void {
    this.add(keys, resource, amount);
  }

  /** Gives back what charge() took. Never goes below zero. */
  refund<R extends QuotaResource>(
    keys: readonly string[],
    resource: R,
    amount: R extends "bytes" ? bigint : number,
  ): void {
    // biome-ignore lint/suspicious/noExplicitAny: negated by R's type
    this.add(keys, resource, (typeof amount === "bigint" ? -amount : -(amount as number)) as any);
  }

  private add(keys: readonly string[], resource: QuotaResource, amount: number | bigint): void {
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      let u = this.book.get(k);
      if (!u) {
        u = empty();
        this.book.set(k, u);
      }
      if (resource === "bytes") {
        const v = u.bytes + (amount as bigint);
        u.bytes = v < 0n ? 0n : v;
      } else {
        const v = u[resource] + (amount as number);
        u[resource] = v < 0 ? 0 : v;
      }
      if (isEmpty(u)) this.book.delete(k);
    }
  }
}
