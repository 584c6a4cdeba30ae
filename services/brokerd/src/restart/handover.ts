// handover.ts: the planned-upgrade hand-over of named fds from a running (old) brokerd to its
// replacement on the same host, for hosts without systemd's fdstore. Closing the fds clients depend
// on (VFIO device/group/container fds, BAR memfds, listening sockets) would reset devices and drop
// clients, so the new brokerd takes a copy of every one over a Unix socket (SCM_RIGHTS) before the
// old exits, like HAProxy's seamless reload. A listening socket handed over keeps its backlog:
// clients that connect while neither process accepts wait, they are not refused.
//
// This file only gathers the three parts, each in its own file: the wire (frames, errors, the
// protocol: handover-wire.ts), the old side's offer (handover-offer.ts) and the new side's take
// (handover-take.ts). Both ends check SO_PEERCRED: the peer must run as our own euid (the socket
// is also mode 0600).
export { type HandoverHooks, offerHandover } from "./handover-offer.js";
export { type TakenOver, takeOver } from "./handover-take.js";
export {
  HANDOVER_VERSION,
  HandoverError,
  type HandoverErrorCode,
  MAX_HANDOVER_FRAME,
} from "./handover-wire.js";
