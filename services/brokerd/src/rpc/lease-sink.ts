// The server end of one Lease stream as the Broker sees it (a LeaseSink): events go down as
// LeaseResponse messages, and end() sends LeaseEnded and ends the call with status OK, so a client
// always learns why its session ended instead of seeing a bare connection drop.
//
// A peer that stops reading must not grow brokerd's memory: grpc-js queues every write it cannot
// flush, so once more than MAX_QUEUED events wait (an HTTP/2 window of 0, a client that never
// reads its keepalive acks) the peer is treated as gone and its session ends ("lease-stalled").
import type { MessageInitShape } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import type { LeaseRequest, LeaseResponseSchema } from "@vfio-broker/proto";
import type { LeaseEvent, LeaseSink } from "../identity/session.js";
import { leaseNoticeToPb } from "./convert.js";

type LeaseCall = grpc.ServerDuplexStream<LeaseRequest, MessageInitShape<typeof LeaseResponseSchema>>;

/** Events queued unsent before the peer counts as not reading. */
export const MAX_QUEUED = 256;
/** How long end() waits for LeaseEnded and the status to flush before giving up on the peer. */
export const FLUSH_MS = 1000;

function toPb(e: LeaseEvent): MessageInitShape<typeof LeaseResponseSchema> {
  if (e.kind === "keepalive_ack") return { kind: { case: "keepaliveAck", value: { sequence: e.sequence } } };
  return { kind: leaseNoticeToPb(e) };
}

/**
 * A LeaseSink over call. `stalled` is called (once) when the peer stops reading; the owner ends
 * the session. After the call closed or failed, nothing more is written.
 */
export function leaseSink(
  call: LeaseCall,
  stalled: (why: { reason: string; message: string }) => void,
): LeaseSink {
  let open = true;
  let ending: Promise<void> | undefined;
  call.once("close", () => {
    open = false;
  });
  call.once("error", () => {
    open = false;
  });
  const write = (m: MessageInitShape<typeof LeaseResponseSchema>): void => {
    if (!open) return;
    if (call.writableLength >= MAX_QUEUED) {
      open = false;
      queueMicrotask(() =>
        stalled({
          reason: "lease-stalled",
          message: `${MAX_QUEUED} lease events were left unread; read your lease stream`,
        }),
      );
      return;
    }
    call.write(m);
  };
  return {
    send: (e) => write(toPb(e)),
    end(reason, message) {
      if (ending) return ending;
      if (!open) {
        ending = Promise.resolve();
        return ending;
      }
      write({ kind: { case: "ended", value: { reason, message } } });
      open = false;
      ending = new Promise<void>((resolve) => {
        const t = setTimeout(resolve, FLUSH_MS);
        t.unref();
        const done = () => {
          clearTimeout(t);
          resolve();
        };
        call.once("finish", done);
        call.once("close", done);
        try {
          call.end();
        } catch {
          done();
        }
      });
      return ending;
    },
  };
}
