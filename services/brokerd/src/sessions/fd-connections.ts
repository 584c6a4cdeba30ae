// fd-connections.ts: owns the admission of a connection to the fd channel and what each admitted
// connection charges its identity: one unit of the policy's fdConnections quota and one of
// brokerd's fd-channel cap shared fairly among tenants (grants/fair-share.ts), plus the fds its
// unread replies hold (the unreadFds quota, and the Broker's fdReplies counts that metrics read).
// It never touches a socket, reads a frame or asks the kernel anything about one: the transport
// (fdpass/transport.ts) tells it what a connection holds, and each account settles through the
// callback its transport gave.

import type { Broker } from "../broker.js";
import { BrokerError } from "../errors.js";
import { HELD_REPLY_FDS } from "../fd-budget.js";
import {
  DEFAULT_RESERVE_PERCENT,
  explainRefusal,
  type FairShare,
  tenantShare,
} from "../grants/fair-share.js";
import { reportFdRefused } from "../grants/fd-reports.js";
import { quotaKeys } from "../identity/container.js";
import { cgroupOf } from "../identity/peer.js";
import { describeTenant } from "../identity/subuid.js";
import { limitsFor } from "../policy/index.js";

export const DEFAULT_MAX_CONNECTIONS = 1024;

/** The kernel-verified peer of a connection (SO_PEERCRED). */
export interface FdConnectionPeer {
  uid: number;
  gid: number;
  pid: number;
}

/** A refused connection: its tenant (the transport bounds the refusals it answers by it) and why. */
export interface FdRefusal {
  ok: false;
  tenant: string;
  reason: string;
  message: string;
}

/** What settles one connection's counts: its transport connection (no closure per connection). */
export interface Settles {
  settle(): void;
}

/** What one admitted connection holds of its identity's quotas; closed once, when it closes. */
export class FdAccount {
  /** What is charged to the identity's unreadFds now. */
  private charged = 0;
  private closed = false;

  constructor(
    private readonly book: FdConnections,
    readonly keys: readonly string[],
    /** The identity's unreadFds quota. */
    readonly limit: number,
    readonly tenant: string,
    /** Asks the kernel what the connection's peer has not read, and charges it (the transport's). */
    private readonly owner: Settles,
  ) {}

  /** Has the connection's counts settled now (owner.settle()). */
  settle(): void {
    this.owner.settle();
  }

  /** The fds charged to the identity for this connection's unread replies. */
  get unreadFds(): number {
    return this.charged;
  }

  /** This connection's unread replies hold `fds` fds now: the identity is charged that. */
  charge(fds: number): void {
    const d = fds - this.charged;
    if (d > 0) this.book.broker.quotas.restore(this.keys, "unreadFds", d);
    else if (d < 0) this.book.broker.quotas.refund(this.keys, "unreadFds", -d);
    this.book.broker.fdReplies.unreadFds += d;
    this.charged = fds;
  }

  /** The identity's unread fds (the most over its quota keys). */
  identityUnread(): number {
    let n = 0;
    const keys = this.keys; // indexed: this runs per grant, and for-of allocated there (heap profile)
    for (let i = 0; i < keys.length; i++) n = Math.max(n, this.book.broker.quotas.usage(keys[i]!).unreadFds);
    return n;
  }

  /**
   * A reply carrying `want` fds may be served: the identity's unread fds stay within its unreadFds
   * quota (or it has none unread at all, so one batch always gets through).
   */
  roomFor(want: number): boolean {
    const u = this.identityUnread();
    return u === 0 || u + want <= this.limit;
  }

  /** Settles every connection of the identity (their counts may be stale). */
  settleIdentity(): void {
    for (const a of this.book.sharing(this)) a.settle();
  }

  /** The connection closed: nothing of it is charged any more. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.charge(0);
    this.book.forget(this);
  }
}

/** The fd channel's connections as the quotas see them. */
export class FdConnections {
  /** Open connections, by tenant: brokerd's fd-channel cap shared fairly. */
  readonly shares: FairShare;
  /** Admitted connections by quota key, to settle an identity's counts across its connections. */
  private readonly byKey = new Map<string, Set<FdAccount>>();

  constructor(
    readonly broker: Broker,
    opts: { maxConnections?: number; tenantReservePercent?: number } = {},
  ) {
    this.shares = tenantShare(
      opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      opts.tenantReservePercent ?? DEFAULT_RESERVE_PERCENT,
    );
  }

  /**
   * Admits a connection of peer: the tenant's fair share of brokerd's connections first (from the
   * uid alone), then the identity's own fdConnections quota. A refusal is reported (journal,
   * metrics) here; the transport answers it.
   */
  admit(peer: FdConnectionPeer, owner: Settles): FdAccount | FdRefusal {
    const tenant = this.broker.tenantOf(peer.uid);
    const v = this.shares.check(tenant.key);
    if (!v.ok) {
      const why = explainRefusal(
        this.shares,
        v,
        describeTenant(peer.uid, tenant),
        "fd-channel connections",
        "use fewer connections: one fd-channel connection per process for tickets, and one per workload-protocol (libvfio-broker) session, so share a session between threads instead of opening one each; or ask the operator to raise the cap",
      );
      return this.refused(peer, tenant.key, "limit:global_fd_connections", why);
    }
    // One literal, not `{ ...peer, ...cgroupOf(pid) }`: on Node 20 a spread followed by more
    // properties makes new hidden classes per call (~370 B of old space per connection).
    const c = cgroupOf(peer.pid);
    const identity = {
      uid: peer.uid,
      gid: peer.gid,
      pid: peer.pid,
      cgroup: c.cgroup,
      cgroupTrusted: c.cgroupTrusted,
    };
    const keys = quotaKeys(identity);
    const limits = limitsFor(this.broker.policy, identity);
    try {
      this.broker.quotas.charge(keys, "fdConnections", 1, limits.fdConnections, `uid ${peer.uid}`);
    } catch (e) {
      if (!(e instanceof BrokerError)) throw e;
      return this.refused(peer, tenant.key, e.reason, e.message);
    }
    this.shares.acquire(tenant.key);
    const account = new FdAccount(this, keys, limits.unreadFds, tenant.key, owner);
    for (const k of keys) {
      const set = this.byKey.get(k) ?? new Set<FdAccount>();
      this.byKey.set(k, set);
      set.add(account);
    }
    return account;
  }

  /** Gives back what admit() charged for a connection that closed. */
  release(account: FdAccount): void {
    account.close();
    this.broker.quotas.refund(account.keys, "fdConnections", 1);
    this.shares.release(account.tenant);
  }

  /**
   * brokerd takes private dups of `fds` fds for a reply whose send would block: false (nothing
   * taken) when that would put it over HELD_REPLY_FDS in all.
   */
  holdReplyFds(fds: number): boolean {
    if (this.broker.fdReplies.heldFds + fds > HELD_REPLY_FDS) return false;
    this.broker.fdReplies.heldFds += fds;
    return true;
  }

  /** The dups holdReplyFds() took are closed (the send completed or failed). */
  releaseReplyFds(fds: number): void {
    this.broker.fdReplies.heldFds -= fds;
  }

  /** Fds of replies held by brokerd now, over all connections. */
  get heldReplyFds(): number {
    return this.broker.fdReplies.heldFds;
  }

  /** A connection is not read from until its peer reads (+1), or is again (-1). */
  paused(delta: 1 | -1): void {
    this.broker.fdReplies.pausedConnections += delta;
  }

  /** The accounts sharing a quota key with a (a itself included), each once. */
  sharing(a: FdAccount): Set<FdAccount> {
    const seen = new Set<FdAccount>();
    for (const k of a.keys) for (const o of this.byKey.get(k) ?? []) seen.add(o);
    return seen;
  }

  /** @internal FdAccount.close(). */
  forget(a: FdAccount): void {
    for (const k of a.keys) {
      const set = this.byKey.get(k);
      set?.delete(a);
      if (set?.size === 0) this.byKey.delete(k);
    }
  }

  private refused(peer: FdConnectionPeer, tenant: string, reason: string, message: string): FdRefusal {
    reportFdRefused(this.broker, peer, reason);
    return { ok: false, tenant, reason, message };
  }
}
