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

/**
 * A LeaseSink over connection c. `stalled` is called (once) when the peer stops reading; the owner
 * ends the session. After end(), or once the connection ended, nothing more is sent. Until ready()
 * its events are held (at most MAX_QUEUED_EVENTS, as unsent frames are), so none comes before the
 * hello's reply.
 */
export function workloadLease(
  c: FdConnection,
  stalled: (why: { reason: string; message: string }) => void,
): WorkloadLease {
  let open = true;
  let ending: Promise<void> | undefined;
  let early: EventInit[] | undefined = [];
  const stall = () => {
    if (!open) return;
    open = false;
    queueMicrotask(() => stalled(STALLED));
  };
  const push = (e: EventInit): Promise<void> => {
    if (!open) return Promise.resolve();
    if (early) {
      if (early.length >= MAX_QUEUED_EVENTS) stall();
      else early.push(e);
      return Promise.resolve();
    }
    if (c.queued >= MAX_QUEUED_EVENTS) {
      stall();
      return Promise.resolve();
    }
    return c.reply(eventFrame(e)).catch((err: unknown) => {
      // Not taken in time: a reader that stopped. Any other failure is the peer gone, which the
      // transport sees as well (the session ends as "disconnect").
      if ((err as { code?: string }).code === "ETIMEDOUT") stall();
      else open = false;
    });
  };
  const ready = () => {
    const held = early ?? [];
    early = undefined;
    for (const e of held) void push(e);
  };
  return {
    ready,
    send(e) {
      const ev = toEvent(e);
      if (ev) void push(ev);
    },
    end(reason, message) {
      if (ending) return ending;
      // Ended before its hello was answered: what was held goes first, as it would have.
      if (early) ready();
      const last = push({ kind: { case: "leaseEnded", value: { reason, message } } });
      open = false;
      ending = new Promise<void>((resolve) => {
        const t = setTimeout(resolve, FLUSH_MS);
        t.unref();
        void last.finally(() => {
          clearTimeout(t);
          resolve();
        });
      }).finally(() => c.end());
      return ending;
    },
  };
}
