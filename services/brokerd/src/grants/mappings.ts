// Mappings: the only code that makes or changes a Mapping. A new mapping passes admission
// (grants/admission.ts) and the policy, is charged (grants/charges.ts), gets its backing from the
// device's backend, its pages booked and a cookie in its device file's maple tree, and is recorded
// by the ledger before anything is published or replied; any failure on the way undoes every step
// (core/txn.ts). The same range again is another reference on the same cookie. Ending a mapping is
// grants/ending.ts's, delivering its fd grants/delivery.ts's.
import type { Core } from "../core/context.js";
import { Txn } from "../core/txn.js";
import type { CreateMappingArgs, FdPeer, Grant } from "../core/types.js";
import type { Attribute, Backing, Prot, RegionInfo } from "../devices/backend.js";
import { precondition } from "../errors.js";
import type { Session } from "../identity/session.js";
import { authorizeMapping, type Rule } from "../policy/index.js";
import { checkCapability, checkPages, checkRequest, requireAttribute, requireProt } from "./admission.js";
import type { Charges } from "./charges.js";
import type { DeviceFile, Mapping } from "./device-file.js";
import { holderOf } from "./tickets.js";

type Range = { offset: bigint; length: bigint; attribute: Attribute; prot: Prot; allowFallback: boolean };

export class Mappings {
  constructor(
    private readonly core: Core,
    private readonly charges: Charges,
  ) {}

  /**
   * The mapping an earlier try of this CreateMapping (same request id) made, if it is still held.
   * Pending: its ticket. Delivered: for the fast path (`forFd`) no ticket (the caller redelivers);
   * for gRPC a ticket that delivers a fresh fd of the same cookie, since the earlier try's fd may
   * never have left a brokerd killed after it recorded the delivery (redeliveryTicket).
   */
  retried(s: Session, a: CreateMappingArgs, forFd = false): Grant | undefined {
    const made = a.requestId ? s.requests.get(a.requestId) : undefined;
    if (made?.cookie === undefined) return undefined;
    const df = this.core.guard.deviceFile(s, a.deviceFileId);
    const m = df.mappings.get(made.cookie);
    if (!m) return undefined;
    if (m.state === "pending") return { mapping: m, ticket: m.ticket, expiresAt: m.ticketExpiresAt };
    if (forFd) return { mapping: m, ticket: "", expiresAt: 0 };
    return this.redeliveryTicket(s, m);
  }

  /**
   * A ticket for a delivered mapping of s: its live one if it has one (this session's, as every
   * reference is), else a new one, recorded before the reply. At most one live ticket per mapping
   * comes from retries, however often a client retries.
   */
  private redeliveryTicket(s: Session, m: Mapping): Grant {
    const { tickets, ledger } = this.core;
    if (m.ticket !== "" && tickets.isLive(m.ticket))
      return { mapping: m, ticket: m.ticket, expiresAt: m.ticketExpiresAt };
    const issued = Txn.run((t) => {
      const issued = this.newTicket(t, s, m);
      ledger.refs(m, "ticket");
      return issued;
    });
    return { mapping: m, ticket: issued.ticket, expiresAt: issued.expiresAt };
  }

  /** A new ticket for m, issued to s, made m's live one; undone (forgotten, the old one back) by t. */
  private newTicket(t: Txn, s: Session, m: Mapping): { ticket: string; expiresAt: number } {
    const { tickets } = this.core;
    const before = { ticket: m.ticket, expiresAt: m.ticketExpiresAt };
    const issued = tickets.issue(m, holderOf(s));
    m.ticket = issued.ticket;
    m.ticketExpiresAt = issued.expiresAt;
    t.did(() => {
      tickets.forget(issued.ticket);
      m.ticket = before.ticket;
      m.ticketExpiresAt = before.expiresAt;
    });
    return issued;
  }

  /** The policy rule that lets s map region with attribute and prot (PERMISSION_DENIED if none). */
  rule(s: Session, df: DeviceFile, region: RegionInfo, attribute: Attribute, prot: Prot): Rule {
    const { guard, policy } = this.core;
    const p = policy.current;
    // The same request allowed under this very policy before (core/decisions.ts): its rule.
    const key = `${df.device.id}\u0000${region.name}\u0000${attribute}\u0000${prot}`;
    const known = guard.decisions.rule(p, s, key);
    if (known) return known;
    const d = authorizeMapping(p, s.identity, { device: df.device.id, region: region.name, attribute, prot });
    guard.decide(s, d);
    const rule = (d as { rule: Rule }).rule;
    guard.decisions.rememberRule(p, s, key, rule);
    return rule;
  }

  /**
   * Opens the backend's backing for a range, under the rule that allowed the request; when the
   * backend fell back to another attribute, the policy must allow that one too. The backing is
   * the caller's to release if anything later fails.
   */
  private openBacking(s: Session, df: DeviceFile, region: RegionInfo, range: Range, rule: Rule): Backing {
    const backing = this.core.devices.get(df.device.id).backend.openBacking({
      deviceId: df.device.id,
      region,
      ...range,
      allowDeviceFd: rule.allowDeviceFd,
    });
    try {
      if (backing.effectiveAttribute !== range.attribute)
        this.rule(s, df, region, backing.effectiveAttribute, range.prot);
    } catch (e) {
      backing.release();
      throw e;
    }
    return backing;
  }

  /**
   * CreateMapping. With `deliverTo` (the fd channel's fast path, whose reply carries the fd) a new
   * mapping is created delivered, with no ticket (`delivered` true); a shared one comes back with
   * its ticket as on the gRPC path.
   */
  grant(s: Session, a: CreateMappingArgs, deliverTo?: FdPeer): Grant {
    const t0 = performance.now();
    const { core } = this;
    const df = core.guard.deviceFile(s, a.deviceFileId);
    const region = df.region(a.regionIndex);
    const attribute = requireAttribute(a.attribute);
    const prot = requireProt(a.prot);
    const range: Range = {
      offset: a.offset,
      length: a.length,
      attribute,
      prot,
      allowFallback: a.allowFallback,
    };
    checkRequest(df.device.id, region, range, core.opts.pageSize, core.devices.healthOf(df.device.id));
    const rule = this.rule(s, df, region, attribute, prot);
    const same = df.sharedMapping(region.index, a.offset, a.length, attribute, prot);
    if (same && (a.allowFallback || same.effectiveAttribute === attribute))
      return this.addReference(s, same, rule, a.requestId ?? "");
    const m = Txn.run((t) => {
      const bind = this.charges.mapping(t, s, a.length, rule);
      const backing = this.openBacking(s, df, region, range, rule);
      t.did(() => backing.release());
      // The effective attribute decides the PAT conflict; the backend tells us which one it is.
      const attrs = core.devices.attributeMap(df.device.id);
      checkPages(attrs, core.holds, region, range, backing.effectiveAttribute, core.opts.pageSize);
      attrs.acquire(region.index, a.offset, a.length, backing.effectiveAttribute);
      t.did(() => attrs.release(region.index, a.offset, a.length));
      const m = df.addMapping((cookie) => newMapping(cookie, df, region, a, range, backing, rule), a.length);
      t.did(() => df.removeMapping(m));
      bind(m);
      if (deliverTo) {
        // Its fd goes out in this very reply: it is never pending.
        this.charges.settle(s, m);
        m.state = "delivered";
      } else {
        const issued = core.tickets.issue(m, holderOf(s));
        t.did(() => core.tickets.forget(issued.ticket));
        m.ticket = issued.ticket;
        m.ticketExpiresAt = issued.expiresAt;
      }
      // Recorded before the reply carries the ticket (or the fd).
      core.ledger.mappingCreated(m);
      return m;
    });
    s.remember(a.requestId ?? "", { cookie: m.cookie });
    if (deliverTo) core.events.emit("mapping.grant", m, performance.now() - t0, deliverTo);
    else core.events.emit("mapping.create", m, performance.now() - t0);
    return { mapping: m, ticket: m.ticket, expiresAt: m.ticketExpiresAt, delivered: !!deliverTo };
  }

  /**
   * The same range, attribute and prot again in the same device file: the existing cookie with one
   * more reference (the kernel RFC review's rule), not a new alias. Each reference counts against
   * the mappings quota and needs its own ReleaseMapping; no bytes are charged twice, since no new
   * memory is exposed. The reply carries a fresh ticket: it delivers the mapping's pending fd, or,
   * once that went out, a fresh fd for the same cookie (redeliver), so every CreateMapping reply
   * lets its caller fetch an fd.
   */
  private addReference(s: Session, m: Mapping, rule: Rule, requestId: string): Grant {
    const { ledger } = this.core;
    const issued = Txn.run((t) => {
      this.charges.reference(t, s, rule);
      const issued = this.newTicket(t, s, m);
      m.refs++;
      t.did(() => m.refs--);
      // Recorded before the reply, like a creation: a restart keeps the count.
      ledger.refs(m, "add");
      return issued;
    });
    this.core.events.emit("mapping.refs", m, "add");
    s.remember(requestId, { cookie: m.cookie });
    return { mapping: m, ticket: issued.ticket, expiresAt: issued.expiresAt };
  }

  /** SetMappingAttribute: a pending, unshared mapping gets another attribute (and a new backing). */
  setAttribute(
    s: Session,
    dfId: bigint,
    cookie: bigint,
    attribute: Attribute | undefined,
    allowFallback: boolean,
  ): Mapping {
    const df = this.core.guard.deviceFile(s, dfId);
    const m = df.mapping(cookie);
    const attr = requireAttribute(attribute);
    if (m.refs > 1)
      throw precondition(
        `mapping ${cookie} is shared by ${m.refs} CreateMapping references; a cookie's attribute changes for none ` +
          "of them. Release them and create the mapping again with the attribute you want",
        "shared",
      );
    if (m.state !== "pending")
      throw precondition(
        `mapping ${cookie} was already delivered with ${m.effectiveAttribute}; release it and create a new one`,
        "already_delivered",
      );
    const region = m.region;
    checkCapability(df.device.id, region, attr, allowFallback);
    const rule = this.rule(s, df, region, attr, m.prot);
    const attrs = this.core.devices.attributeMap(df.device.id);
    const range = { offset: m.regionOffset, length: m.length, attribute: attr, prot: m.prot, allowFallback };
    const backing = this.openBacking(s, df, region, range, rule);
    attrs.release(region.index, m.regionOffset, m.length);
    try {
      checkPages(attrs, this.core.holds, region, range, backing.effectiveAttribute, this.core.opts.pageSize);
    } catch (e) {
      attrs.acquire(region.index, m.regionOffset, m.length, m.effectiveAttribute);
      backing.release();
      throw e;
    }
    attrs.acquire(region.index, m.regionOffset, m.length, backing.effectiveAttribute);
    m.backing.release();
    m.backing = backing;
    m.requestedAttribute = attr;
    m.effectiveAttribute = backing.effectiveAttribute;
    m.fallbackReason = backing.fallbackReason;
    m.rule = rule.name;
    this.core.ledger.mappingUpdated(m);
    this.core.events.emit("mapping.update", m);
    return m;
  }

  /**
   * A fresh backing, and so a fresh fd, for a mapping whose fd already went out: a retried
   * fd-channel grant (brokerd restarted between recording the delivery and sending the fd), or
   * the ticket of another reference on the same cookie. The same process gets an fd for it again.
   */
  redeliver(s: Session, m: Mapping): Mapping {
    const df = m.deviceFile;
    const rule = this.rule(s, df, m.region, m.effectiveAttribute, m.prot);
    const backing = this.openBacking(
      s,
      df,
      m.region,
      {
        offset: m.regionOffset,
        length: m.length,
        attribute: m.effectiveAttribute,
        prot: m.prot,
        allowFallback: false,
      },
      rule,
    );
    m.backing.release();
    m.backing = backing;
    return m;
  }
}

function newMapping(
  cookie: bigint,
  df: DeviceFile,
  region: RegionInfo,
  a: CreateMappingArgs,
  range: Range,
  backing: Backing,
  rule: Rule,
): Mapping {
  return {
    cookie,
    deviceFile: df,
    region,
    regionOffset: a.offset,
    length: a.length,
    requestedAttribute: range.attribute,
    effectiveAttribute: backing.effectiveAttribute,
    fallbackReason: backing.fallbackReason,
    prot: range.prot,
    backing,
    state: "pending",
    ticket: "",
    rule: rule.name,
    createdAt: Date.now(),
    requestId: a.requestId ?? "",
    ticketExpiresAt: 0,
    refs: 1,
  };
}
