// Holders: revoked mappings whose holder process may still map them (holds, state "revoking").
// A hold keeps its pages and quota booked until its holder releases it or exits; brokerd watches
// each holder's exit (a pidfd for the first MAX_WATCHED_HOLDERS, /proc start time for the rest)
// and, where the operator or the rule says so, kills a holder whose grace ran out (SIGKILL through
// a pidfd checked against the start time, never a process that reused the pid). Owns the holds'
// life and their watches; the decision that a mapping becomes a hold is grants/ending.ts's.
import { randomBytes } from "node:crypto";
import { closeFd, pidfdSendSignal, type Watch, watchPidfd } from "@vfio-broker/native";
import type { Core } from "../core/context.js";
import { MAX_WATCHED_HOLDERS } from "../core/types.js";
import { openIfSameProcess, processStartTime } from "../identity/peer.js";
import type { Session } from "../identity/session.js";
import { logLimited } from "../log.js";
import type { Charges } from "./charges.js";
import type { Mapping } from "./device-file.js";
import { type Enforcement, enforcementFor, type Hold, holderKey } from "./holds.js";

export class Holders {
  /**
   * The exit watch of each holder process with holds (key: holderKey): one fd each, for at most
   * MAX_WATCHED_HOLDERS of them; the others (undefined) are looked up in /proc by the sweep.
   */
  private readonly watches = new Map<string, Watch | undefined>();
  private watched = 0;
  /** Holds made so far (RevokeCounts.mappingsHeld is the difference over one revocation). */
  made = 0;
  /** The operator's enforcement for the revocation in progress (revokeMapping/revokeSession). */
  private enforcing: Enforcement | undefined;

  constructor(
    private readonly core: Core,
    private readonly charges: Charges,
  ) {}

  /** The hold m becomes when it leaves its device file revoked while its holder may still map it. */
  holdOf(s: Session, m: Mapping, reason: string): Hold {
    const now = Date.now();
    const enforce = enforcementFor(reason, this.enforcing, this.core.policy.ruleOf(m.rule));
    const id = s.identity;
    return {
      id: `${m.deviceFile.id}.${m.cookie}.${randomBytes(6).toString("hex")}`,
      pid: id.pid,
      startTime: id.startTime,
      uid: id.uid,
      sessionId: s.id,
      deviceFileId: m.deviceFile.id,
      cookie: m.cookie,
      deviceId: m.deviceFile.device.id,
      regionIndex: m.region.index,
      regionName: m.region.name,
      offset: m.regionOffset,
      length: m.length,
      attribute: m.effectiveAttribute,
      prot: m.prot,
      kind: m.backing.kind,
      refs: m.refs,
      quotaKeys: [...s.quotaKeys],
      rule: m.rule,
      reason,
      since: now,
      enforceAt: enforce ? now + enforce.graceMs : 0,
      enforceBy: enforce?.by ?? "",
      enforced: false,
    };
  }

  /** A new hold, recorded already, whose booking the mapping leaves behind: watched from now on. */
  hold(h: Hold, pidfd: number): void {
    this.adopt(h, pidfd);
    this.made++;
    this.core.events.emit("mapping.hold", h);
  }

  /**
   * Books h (its pages and quota must already be booked: a revoked mapping's are, a restored
   * hold's the caller books) and watches its holder's exit through a dup of `pidfd`.
   */
  adopt(h: Hold, pidfd: number): void {
    this.core.holds.add(h);
    const key = holderKey(h.pid, h.startTime);
    if (this.watches.has(key)) return;
    let watch: Watch | undefined;
    if (this.watched < MAX_WATCHED_HOLDERS)
      try {
        // watchPidfd keeps a dup of its own: the caller's pidfd (the session's) may close.
        watch = watchPidfd(pidfd, () => this.exited(key));
        this.watched++;
      } catch (e) {
        // No watch (fds exhausted): the sweep checks the process by its start time instead.
        logLimited("hold.watch", `vfio-brokerd: cannot watch holder pid ${h.pid}: ${(e as Error).message}`);
      }
    this.watches.set(key, watch);
  }

  /** A holder process exited: every hold it had ends, its pages and quota are free. */
  private exited(key: string): void {
    const i = key.indexOf(":");
    const [pid, startTime] = [Number(key.slice(0, i)), key.slice(i + 1)];
    this.core.recorders.quietly(() => {
      for (const h of this.core.holds.ofHolder(pid, startTime)) this.unhold(h, "exit");
    });
    this.forget(key);
  }

  private forget(key: string): void {
    if (!this.watches.has(key)) return;
    const w = this.watches.get(key);
    this.watches.delete(key);
    if (w) {
      w.close();
      this.watched--;
    }
  }

  /** Ends a hold ("release": its holder released it; "exit"): its pages and quota are free. */
  unhold(h: Hold, how: string): void {
    if (this.core.holds.get(h.id) !== h) return;
    this.core.ledger.unheld(h.id);
    this.core.holds.remove(h);
    this.core.sessions.get(h.sessionId)?.deviceFiles.get(h.deviceFileId)?.releaseCookie(h.cookie);
    this.core.devices.attributeMap(h.deviceId).release(h.regionIndex, h.offset, h.length);
    this.charges.free(h.quotaKeys, h.refs, h.length);
    this.core.events.emit("mapping.unhold", h, how);
    if (this.core.holds.ofHolder(h.pid, h.startTime).length === 0) this.forget(holderKey(h.pid, h.startTime));
  }

  /** Runs fn with the operator's enforcement applying to the holds it makes. */
  withEnforcement(enforce: { graceMs: number } | undefined, fn: () => void): void {
    this.enforcing = enforce ? { by: "operator", graceMs: enforce.graceMs } : undefined;
    try {
      fn();
    } finally {
      this.enforcing = undefined;
    }
  }

  /** Holds revoked again: with enforce, their holder is killed after the grace (kept across restarts). */
  enforce(held: Hold[], enforce: { graceMs: number } | undefined): void {
    if (!enforce) return;
    const at = Date.now() + enforce.graceMs;
    for (const h of held)
      if (!h.enforced && (h.enforceAt === 0 || at < h.enforceAt)) {
        h.enforceAt = at;
        h.enforceBy = "operator";
        // Recorded like a new hold: a restart keeps the deadline.
        this.core.ledger.held(h);
        this.core.events.emit("mapping.hold", h);
      }
  }

  /** The sweep: kills holders whose enforcement is due, and ends holds of unwatched holders gone. */
  sweep(now: number): void {
    if (this.core.holds.size === 0) return;
    this.enforceDue(now);
    for (const [key, w] of this.watches) {
      if (w) continue;
      const i = key.indexOf(":");
      if (processStartTime(Number(key.slice(0, i))) !== key.slice(i + 1)) this.exited(key);
    }
  }

  /**
   * Kills the holders whose enforcement is due (SIGKILL through a pidfd opened for it and checked
   * against the start time: never a process that reused the pid). Their exit then frees the pages.
   */
  private enforceDue(now: number): void {
    const byHolder = new Map<string, Hold[]>();
    for (const h of this.core.holds.due(now)) {
      const k = holderKey(h.pid, h.startTime);
      byHolder.set(k, [...(byHolder.get(k) ?? []), h]);
    }
    for (const hs of byHolder.values()) {
      for (const h of hs) h.enforced = true;
      const h0 = hs[0]!;
      const proc = openIfSameProcess(h0.pid, h0.startTime);
      let result = "gone";
      if ("pidfd" in proc)
        try {
          result = pidfdSendSignal(proc.pidfd, 9) ? "killed" : "gone";
        } catch (e) {
          result = `error:${(e as NodeJS.ErrnoException).code ?? "unknown"}`;
        } finally {
          closeFd(proc.pidfd);
        }
      this.core.events.emit("mapping.revoke.enforced", hs, result);
    }
  }
}
