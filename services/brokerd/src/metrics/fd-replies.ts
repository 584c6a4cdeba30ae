// fd-channel replies as Prometheus series: fds sent and not read yet, fds brokerd holds because a
// client's socket buffer is full, connections paused until their clients read. Read at scrape
// time from broker.fdReplies, so they cannot drift; no labels.
import { Gauge, type Registry } from "prom-client";
import type { Broker } from "../broker.js";
import { P } from "./series.js";

export function registerFdReplyMetrics(registry: Registry, broker: Broker): void {
  const registers = [registry];
  new Gauge({
    name: `${P}fd_unread_fds`,
    help: "Fds in fd-channel replies their clients have not read yet (in flight in the kernel, one open file each, or held by brokerd while a send would block), as brokerd counts them (SIOCOUTQ).",
    registers,
    collect() {
      this.set(broker.fdReplies.unreadFds);
    },
  });
  new Gauge({
    name: `${P}fd_held_reply_fds`,
    help: "Fds of fd-channel replies brokerd holds because the client's socket buffer is full (at most 256).",
    registers,
    collect() {
      this.set(broker.fdReplies.heldFds);
    },
  });
  new Gauge({
    name: `${P}fd_connections_paused`,
    help: "fd-channel connections brokerd does not read from until their clients read their replies (a batch's worth of fds unread on the connection, or the identity at its unreadFds quota).",
    registers,
    collect() {
      this.set(broker.fdReplies.pausedConnections);
    },
  });
}
