// Ledger: the only writer of grant state to the StateStore. The core's services call it before the
// change that a reply depends on is made and published, so a record is on disk before any reply,
// fd or event that depends on it:
//   - creations (a session, a device file, a mapping, a new reference) and deliveries throw
//     UNAVAILABLE store_failed when the write fails: the caller undoes what it prepared and
//     refuses the call (a delivery sends no fd);
//   - releases and other ends are logged and counted when the write fails, and go ahead: the store
//     then keeps a booking brokerd dropped, which a restart reconciles (it can only over-book,
//     never grant a page twice).
// It decides nothing about grants and emits no events. Without a store (tests, tools) it records
// nothing.
import type { ClaimRec } from "../claims/book.js";
import type { DeviceHealth } from "../devices/backend.js";
import { storeFailed } from "../errors.js";
import type { DeviceFile, Mapping } from "../grants/device-file.js";
import type { Hold } from "../grants/holds.js";
import type { Session } from "../identity/session.js";
import { logLimited } from "../log.js";
import { deviceFileRec, holdRec, mappingRec, sessionRec } from "./convert.js";
import type { StateRecord } from "./records.js";
import { GroupWriteError, type StateStore, type StoreStats } from "./store.js";

/** A creation whose records were not written: UNAVAILABLE store_failed (the caller undoes it). */
function creationFailed(e: unknown): never {
  throw e instanceof GroupWriteError ? storeFailed(e.cause) : e;
}

export class Ledger {
  /** Writes that failed (ends only; failed creations were refused). */
  failures = 0;
  /** Once frozen (hand-over, stop keeping grants) nothing more is written: the state is final. */
  frozen = false;

  constructor(private readonly store: StateStore | undefined) {}

  /** A ledger that records nothing (no state directory). */
  static none(): Ledger {
    return new Ledger(undefined);
  }

  /** Holds records until uncork(), which writes them in one write(2) (an fd-channel batch). */
  cork(): void {
    this.store?.cork();
  }

  /** Writes what cork() held; throws (the store's error) if that failed. */
  uncork(): void {
    this.store?.uncork();
  }

  /** Whatever group() holds is written first: once frozen the state is final. */
  freeze(): void {
    this.store?.flushGroup();
    this.frozen = true;
  }

  /**
   * Group commit (StateStore.group): runs fn, its records written with those of other connections
   * of this event-loop turn in one write(2); settles once they are written. A creation's write
   * failing rejects with UNAVAILABLE store_failed (the caller undoes what fn did and refuses); for
   * an ending (`ending` names it) the failure is logged and counted, as for any ending.
   */
  group(fn: () => void, ending?: string): Promise<void> {
    if (this.frozen || !this.store) {
      try {
        fn();
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const written = this.store.group(fn);
    return ending === undefined
      ? written.then(undefined, creationFailed)
      : written.then(undefined, (e: unknown) => this.endingFailed(e, ending));
  }

  /** An ending whose records were not written: logged and counted, and it goes ahead. */
  private endingFailed(e: unknown, ending: string): void {
    if (!(e instanceof GroupWriteError)) throw e;
    this.failures++;
    logLimited(
      "state.write",
      `vfio-brokerd: state store: recording ${ending} failed: ${(e.cause as Error).message}`,
    );
  }

  thaw(): void {
    this.frozen = false;
  }

  get stats(): StoreStats & { failures: number } {
    const none = { appends: 0, writes: 0, bytes: 0, compactions: 0, compactFailures: 0, lastCompactMs: 0 };
    return { ...(this.store?.stats ?? none), failures: this.failures };
  }

  /** A record a reply depends on: throws UNAVAILABLE store_failed if it cannot be written. */
  private must(r: StateRecord): void {
    if (this.frozen || !this.store) return;
    try {
      this.store.append(r);
    } catch (e) {
      throw storeFailed(e);
    }
  }

  /** A record of something ending: a failure is logged and counted, never thrown. */
  private may(what: string, r: StateRecord): void {
    if (this.frozen || !this.store) return;
    try {
      this.store.append(r);
    } catch (e) {
      this.failures++;
      logLimited(
        "state.write",
        `vfio-brokerd: state store: recording ${what} failed: ${(e as Error).message}`,
      );
    }
  }

  run(run: number, bootId: string): void {
    this.must({ t: "run", run, pid: process.pid, at: Date.now(), bootId });
  }

  sessionOpened(s: Session): void {
    this.must({ t: "session.open", s: sessionRec(s) });
  }

  sessionEnded(id: string): void {
    this.may("a session end", { t: "session.end", id });
  }

  deviceFileOpened(df: DeviceFile): void {
    this.must({ t: "df.open", d: deviceFileRec(df) });
  }

  deviceFileClosed(id: bigint | string): void {
    this.may("a device-file close", { t: "df.close", id: String(id) });
  }

  /** A new mapping, pending or (the fast path) already delivered: one record says which. */
  mappingCreated(m: Mapping): void {
    this.must({ t: "map.create", m: mappingRec(m) });
  }

  mappingUpdated(m: Mapping): void {
    this.may("an attribute change", {
      t: "map.update",
      df: String(m.deviceFile.id),
      cookie: String(m.cookie),
      requested: m.requestedAttribute,
      effective: m.effectiveAttribute,
      fallbackReason: m.fallbackReason,
      kind: m.backing.kind,
      rule: m.rule,
    });
  }

  /**
   * The reference count and live ticket: a new reference, or a new ticket for a delivered mapping
   * (a retried CreateMapping), is a creation (refused on failure); a dropped reference an end.
   */
  refs(m: Mapping, how: "add" | "ticket" | "drop"): void {
    const r: StateRecord = {
      t: "map.refs",
      df: String(m.deviceFile.id),
      cookie: String(m.cookie),
      refs: m.refs,
      ticket: m.ticket,
      expiresAt: m.ticketExpiresAt,
    };
    if (how === "drop") this.may("a reference release", r);
    else this.must(r);
  }

  /**
   * A delivery, written before the fd is sent (a restart then keeps the pages booked); `ticket` is
   * another reference's live ticket left after it ("" if none). Throws UNAVAILABLE store_failed
   * if it cannot be written: the fd must not go out then, or a restart could free pages it maps.
   */
  delivered(m: Mapping, ticket: string): void {
    this.must({
      t: "map.deliver",
      df: String(m.deviceFile.id),
      cookie: String(m.cookie),
      ...(ticket ? { ticket } : {}),
    });
  }

  released(df: bigint | string, cookie: bigint | string): void {
    this.may("a release", { t: "map.release", df: String(df), cookie: String(cookie) });
  }

  /**
   * A hold (or its new enforcement deadline). Written before its mapping's release: a restart in
   * between keeps the pages booked twice with one attribute, never not at all.
   */
  held(h: Hold): void {
    this.may("a revoked mapping's hold", { t: "hold", h: holdRec(h) });
  }

  unheld(id: string): void {
    this.may("a hold's end", { t: "hold.end", id });
  }

  /**
   * A claim bound or unbound: both are written before the change (throws UNAVAILABLE store_failed
   * otherwise): an unbind lost to a crash would give a restarted brokerd's policy the pods back.
   */
  claimBound(c: ClaimRec): void {
    this.must({ t: "claim.bind", c });
  }

  claimUnbound(uid: string): void {
    this.must({ t: "claim.unbind", uid });
  }

  health(device: string, health: DeviceHealth): void {
    this.may("a device health change", { t: "health", device, health });
  }
}
