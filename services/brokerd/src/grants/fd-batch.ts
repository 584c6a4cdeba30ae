// fd-batch.ts: owns the grants the fd channel makes for a session whose process is the peer: one
// grant with its fd ready to go (created delivered, or its ticket redeemed at once), a batch of
// releases and grants recorded in one write with its undo when that write fails, and the giving
// back of grants whose fds the kernel refused. Every check and record is the Broker's, exactly as
// on the gRPC path. It never encodes a reply or touches a socket; the fds it returns are the
// caller's to send and close.

import { closeFd, dupFd } from "@vfio-broker/native";
import type { Broker, CreateMappingArgs, FdPeer } from "../broker.js";
import { BrokerError } from "../errors.js";
import type { Session } from "../identity/session.js";
import type { Mapping } from "./device-file.js";
import { reportFdUndeliverable } from "./fd-reports.js";

/** One item of a batch: done, or the error that refused it (what the single request would have thrown). */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

export interface BatchOutcome<T> {
  /** Each release, in order: the cookie given back. */
  releases: Outcome<bigint>[];
  /** Each grant, in order: what view() saw of its mapping right after it was granted. */
  grants: Outcome<T>[];
  /** A dup of each granted mapping's fd, in item order: the caller sends and closes them. */
  fds: number[];
  /** The mappings granted (those with an fd above), to give back if their fds are refused. */
  granted: Mapping[];
}

/** One grant for s, its fd ready to go to peer (created delivered, or a ticket redeemed). */
export function grantForFd(broker: Broker, s: Session, args: CreateMappingArgs, peer: FdPeer): Mapping {
  const r = broker.createMapping(s, args, peer);
  if (r.delivered) return r.mapping;
  if (r.ticket === "") return broker.redeliver(s, r.mapping);
  const d = broker.redeemTicket(r.ticket, peer);
  if (!d.ok) throw new BrokerError("INTERNAL", d.message, "fd_grant");
  return d.mapping;
}

/**
 * Releases, then grants, each done on its own as the single request would be; every record and
 * journal line of the batch in one write each, before the reply. Each fd is dup'ed as soon as its
 * item is granted (brokerd's own copy is closed: handedOver), so a later item of the same batch
 * (another reference on the same cookie, which gets a fresh backing) cannot close one that is
 * still to be sent; how.args(g) reads an item's arguments (refusing that item alone if they are
 * bad), how.view(m) takes what the reply says of it at that moment (a later reference
 * changes its count). If the records did not reach the store, nothing of the batch may be relied on:
 * its grants are given back (their fds closed, never sent) and each says why; its releases stand
 * (they are done in memory).
 */
export function grantBatch<G, T>(
  broker: Broker,
  s: Session,
  items: { releases: readonly { deviceFileId: bigint; cookie: bigint }[]; grants: readonly G[] },
  peer: FdPeer,
  how: { args: (g: G) => CreateMappingArgs; view: (m: Mapping) => T },
): BatchOutcome<T> {
  const { releases, grants } = items;
  const out: BatchOutcome<T> = { releases: [], grants: [], fds: [], granted: [] };
  try {
    broker.batch(() => {
      for (const r of releases)
        try {
          broker.releaseMapping(s, r.deviceFileId, r.cookie);
          out.releases.push({ ok: true, value: r.cookie });
        } catch (error) {
          out.releases.push({ ok: false, error });
        }
      for (const g of grants) {
        let m: Mapping;
        try {
          m = grantForFd(broker, s, how.args(g), peer);
        } catch (error) {
          out.grants.push({ ok: false, error });
          continue;
        }
        out.granted.push(m);
        try {
          out.fds.push(dupFd(m.backing.fd));
        } finally {
          // brokerd keeps no copy of a delivered fd (the dup above goes out with the reply).
          m.backing.handedOver();
        }
        out.grants.push({ ok: true, value: how.view(m) });
      }
    });
  } catch (error) {
    for (const m of out.granted)
      try {
        broker.releaseMapping(s, m.deviceFile.id, m.cookie);
      } catch {
        // already gone (revoked meanwhile): nothing to give back
      }
    for (const fd of out.fds.splice(0)) closeFd(fd);
    out.granted = [];
    out.grants = grants.map(() => ({ ok: false, error }));
  }
  return out;
}

/**
 * A reply carrying fds failed (`failure`, as fdpass/delivery-failure.ts classified it): reported.
 * If nothing of it left brokerd (unsent), the grants in giveBack are released (reason
 * "undeliverable"); a redeemed ticket's mapping is not in giveBack: its client releases it.
 */
export function undeliverable(
  broker: Broker,
  failure: { errno: string; message: string; unsent: boolean },
  peer: FdPeer,
  giveBack: readonly Mapping[],
): void {
  reportFdUndeliverable(broker, failure, peer);
  if (!failure.unsent) return;
  for (const m of giveBack) {
    const s = broker.sessions.get(m.deviceFile.sessionId);
    try {
      if (s) broker.releaseMapping(s, m.deviceFile.id, m.cookie, "undeliverable");
    } catch {
      // already gone (revoked meanwhile): nothing to give back
    }
  }
}

/** Gives back a grant whose state records did not reach the store: its fd is never sent. */
export function giveBack(broker: Broker, s: Session, m: Mapping): void {
  try {
    broker.releaseMapping(s, m.deviceFile.id, m.cookie);
  } catch {
    // already gone (revoked meanwhile): nothing to give back
  }
}
