// Core: what the core's services share, built once by the Broker (broker.ts) and handed to each of
// them: the options, the books (quotas, tickets, holds), the session table, the device registry,
// the policy in force, the ledger and the events. Also the two rules every call starts with (the
// session is alive, the identity is allowed) and the batch that holds records for one write.
// Owns no grant logic: services do; it never records or publishes anything of its own.

import { ClaimBook } from "../claims/book.js";
import type { DeviceRegistry } from "../devices/registry.js";
import { BrokerError, denied, notFound, restarting, sessionEnded, storeFailed } from "../errors.js";
import type { DeviceFile, Mapping } from "../grants/device-file.js";
import type { HoldBook } from "../grants/holds.js";
import type { QuotaBook } from "../grants/quota.js";
import type { TicketBook } from "../grants/tickets.js";
import type { Session } from "../identity/session.js";
import type { TenantMap } from "../identity/subuid.js";
import { logLimited } from "../log.js";
import { authorizeIdentity, type Decision, type Policy } from "../policy/index.js";
import type { SessionTable } from "../sessions/table.js";
import type { Ledger } from "../state/ledger.js";
import { Decisions } from "./decisions.js";
import type { CoreEvents } from "./events.js";
import type { BrokerOptions, Recorder } from "./types.js";

export interface Core {
  readonly opts: BrokerOptions;
  readonly events: CoreEvents;
  readonly ledger: Ledger;
  readonly sessions: SessionTable;
  readonly devices: DeviceRegistry;
  readonly quotas: QuotaBook;
  readonly tickets: TicketBook<Mapping>;
  readonly holds: HoldBook;
  readonly policy: PolicyInForce;
  readonly guard: Guard;
  readonly recorders: Recorders;
  tenants: TenantMap;
}

/** The policy in force, and the one before the last reload (a revoked mapping's rule may be gone). */
export class PolicyInForce {
  previous: Policy | undefined;
  current: Policy;
  /** The bound Kubernetes claims, read by the policy in force (whichever file it came from). */
  readonly claims = new ClaimBook();
  constructor(p: Policy) {
    this.current = { ...p, claims: this.claims };
  }

  replace(p: Policy): void {
    this.previous = this.current;
    this.current = { ...p, claims: this.claims };
  }

  /** The rule a mapping was granted under, by name (the old policy's after a reload took it away). */
  ruleOf(name: string) {
    return (
      this.current.rules.find((r) => r.name === name) ?? this.previous?.rules.find((r) => r.name === name)
    );
  }
}

/** The checks every call makes first. */
export class Guard {
  /**
   * Set while brokerd hands over to its successor or stops keeping grants: the state is final, so
   * every call is refused (UNAVAILABLE, reason "restarting") and the client retries there.
   */
  frozen = false;
  /** The policy's allows, remembered per session for the policy in force (core/decisions.ts). */
  readonly decisions = new Decisions();

  constructor(
    private readonly policy: PolicyInForce,
    private readonly events: CoreEvents,
  ) {}

  /** A policy decision: a refusal is published ("denied") and thrown as PERMISSION_DENIED. */
  decide(s: Session, d: Decision): void {
    if (!d.allow) {
      this.events.emit("denied", s, d.reason, d.message);
      throw denied(d.message, `policy:${d.reason}`);
    }
  }

  /** The session must be alive; every call counts as activity for the idle timeout. */
  live(s: Session): void {
    if (this.frozen) throw restarting();
    if (s.ended) throw sessionEnded();
    s.lastActiveAt = Date.now();
  }

  /** Every call starts here: the identity must be named by the policy, and the session alive. */
  authorize(s: Session): void {
    this.live(s);
    const p = this.policy.current;
    if (this.decisions.identityAllowed(p, s)) return;
    this.decide(s, authorizeIdentity(p, s.identity));
    this.decisions.rememberIdentity(p, s);
  }

  /** One of the session's device files, for a call the policy must allow. */
  deviceFile(s: Session, id: bigint): DeviceFile {
    this.authorize(s);
    return this.ownDeviceFile(s, id);
  }

  /**
   * One of the session's own device files, with no policy check: releasing and closing what a
   * session holds is always allowed, whatever the policy says now.
   */
  ownDeviceFile(s: Session, id: bigint): DeviceFile {
    this.live(s);
    const df = s.deviceFiles.get(id);
    if (!df) {
      // Holding nothing by that id: an identity the policy does not name hears that first.
      this.authorize(s);
      throw notFound(
        `no device file ${id} in this session; OpenDevice returns the id to use`,
        "unknown_device_file",
      );
    }
    return df;
  }
}

/** The recorders (the ledger, the journal) that can hold what one batch causes for one write. */
export class Recorders {
  private readonly list: Recorder[] = [];

  add(r: Recorder): void {
    this.list.push(r);
  }

  /**
   * Runs fn with every state record and journal line it causes held and written at its end, one
   * write(2) each (an fd-channel batch). If the state records cannot be written this throws
   * UNAVAILABLE store_failed after fn ran: its effects stay, and the caller undoes them (releases
   * what it granted) before replying.
   */
  batch<T>(fn: () => T): T {
    for (const r of this.list) r.cork();
    let failed: unknown;
    let out: T;
    try {
      out = fn();
    } finally {
      for (const r of this.list)
        try {
          r.uncork();
        } catch (e) {
          failed ??= e;
        }
    }
    if (failed !== undefined) throw storeFailed(failed);
    return out;
  }

  /** batch() for releases only: a failure to write their records is logged, never thrown. */
  quietly(fn: () => void): void {
    try {
      this.batch(fn);
    } catch (e) {
      if (!(e instanceof BrokerError)) throw e;
      logLimited("state.write", `vfio-brokerd: state store: recording releases failed: ${e.message}`);
    }
  }
}
