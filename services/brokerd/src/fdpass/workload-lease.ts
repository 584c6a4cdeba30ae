// The lease of a workload-protocol session (proto/vfiobroker/v1/workload.proto) as the Broker sees
// it (a LeaseSink): its events go down the session's own fd-channel connection as WorkloadReply
// frames with `event` set, and end() pushes lease_ended and then ends the connection, so a client
// learns why its session ended instead of seeing a bare close. It owns only that framing and its
// bound; it never ends a session itself (the owner's `stalled` does).
//
// A peer that stops reading must not grow brokerd's memory: once MAX_QUEUED_EVENTS frames wait in
// brokerd unsent (the kernel's socket buffer is full), or a frame is not taken within the
// transport's send timeout, the peer counts as not reading and `stalled` is called once, as the
// gRPC Lease's "lease-stalled" (rpc/lease-sink.ts).
import type { MessageInitShape } from "@bufbuild/protobuf";
import { create, toBinary } from "@bufbuild/protobuf";
import { FdStatus, type WorkloadEventSchema, WorkloadReplySchema } from "@vfio-broker/proto";
import type { LeaseEvent, LeaseSink } from "../identity/session.js";
import { leaseNoticeToPb } from "../rpc/convert.js";
import type { FdConnection } from "./transport.js";

/** Event frames held unsent in brokerd before the peer counts as not reading. */
export const MAX_QUEUED_EVENTS = 256;
/** How long end() waits for lease_ended to go out before the connection ends anyway. */
export const FLUSH_MS = 1000;

type EventInit = MessageInitShape<typeof WorkloadEventSchema>;

/** One event's frame. */
export function eventFrame(e: EventInit): Uint8Array {
  return toBinary(
    WorkloadReplySchema,
    create(WorkloadReplySchema, { status: FdStatus.OK, kind: { case: "event", value: e } }),
  );
}

/** A lease event as the workload protocol says it; undefined: not said on it (keepalive acks). */
function toEvent(e: LeaseEvent): EventInit | undefined {
  const kind = leaseNoticeToPb(e);
  return kind && { kind };
}

const STALLED = {
  reason: "lease-stalled",
  message: `the workload connection left ${MAX_QUEUED_EVENTS} event frames unread; read your connection`,
};

/** A workload lease: events wait until ready() (the hello's reply is out), then go down as they come. */
export interface WorkloadLease extends LeaseSink {
  ready(): void;
}

/** Told (once) that the peer of connection c stopped reading. */
export type Stalled = (why: { reason: string; message: string }, c: FdConnection) => void;

/**
 * A LeaseSink over connection c. `stalled` is called (once, with c) when the peer stops reading; the
 * owner ends the session (one function for all its leases: no closure per session). After end(), or once the connection ended, nothing more is sent. Until ready()
 * its events are held (at most MAX_QUEUED_EVENTS, as unsent frames are), so none comes before the
 * hello's reply. One object per session, no closures of its own: an idle session's lease is small.
 */
export function workloadLease(c: FdConnection, stalled: Stalled): WorkloadLease {
  return new Lease(c, stalled);
}

class Lease implements WorkloadLease {
  private open = true;
  private ending: Promise<void> | undefined;
  /** ready() was called (the hello's reply is out). */
  private live = false;
  /** Events held until ready() (allocated on the first). */
  private early: EventInit[] | undefined;

  constructor(
    private readonly c: FdConnection,
    private readonly stalled: Stalled,
  ) {}

  private stall(): void {
    if (!this.open) return;
    this.open = false;
    queueMicrotask(() => this.stalled(STALLED, this.c));
  }

  private push(e: EventInit): Promise<void> {
    if (!this.open) return Promise.resolve();
    if (!this.live) {
      this.early ??= [];
      if (this.early.length >= MAX_QUEUED_EVENTS) this.stall();
      else this.early.push(e);
      return Promise.resolve();
    }
    if (this.c.queued >= MAX_QUEUED_EVENTS) {
      this.stall();
      return Promise.resolve();
    }
    return this.c.reply(eventFrame(e)).catch((err: unknown) => {
      // Not taken in time: a reader that stopped. Any other failure is the peer gone, which the
      // transport sees as well (the session ends as "disconnect").
      if ((err as { code?: string }).code === "ETIMEDOUT") this.stall();
      else this.open = false;
    });
  }

  ready(): void {
    if (this.live) return;
    const held = this.early ?? [];
    this.live = true;
    this.early = undefined;
    for (const e of held) void this.push(e);
  }

  send(e: LeaseEvent): void {
    const ev = toEvent(e);
    if (ev) void this.push(ev);
  }

  end(reason: string, message: string): Promise<void> {
    if (this.ending) return this.ending;
    // Ended before its hello was answered: what was held goes first, as it would have.
    this.ready();
    const last = this.push({ kind: { case: "leaseEnded", value: { reason, message } } });
    this.open = false;
    this.ending = new Promise<void>((resolve) => {
      const t = setTimeout(resolve, FLUSH_MS);
      t.unref();
      void last.finally(() => {
        clearTimeout(t);
        resolve();
      });
    }).finally(() => this.c.end());
    return this.ending;
  }
}
