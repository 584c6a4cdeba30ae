// fd deliveries that failed in the kernel, as Prometheus series: failed sends of replies carrying
// fds, by errno, and whether brokerd is exempt from the kernel's per-user limit on fds in flight
// (read from /proc/self/status at scrape time, so it cannot drift). Only reads; no label carries
// anything a client chooses (errno is one of a fixed list).
import { readFileSync } from "node:fs";
import { Counter, Gauge, type Registry } from "prom-client";
import type { Broker, BrokerEvents } from "../broker.js";
import { DELIVERY_FAILURE_ERRNOS } from "../fdpass/delivery-failure.js";
import { inflightExemption, parseCapEff } from "../fdpass/inflight-exemption.js";
import { bounded } from "./labels.js";

const P = "vfio_broker_";

/** Registers the series; returns the detach that unsubscribes from the broker. */
export function registerFdDeliveryMetrics(registry: Registry, broker: Broker): () => void {
  const registers = [registry];
  const failures = new Counter({
    name: `${P}fd_delivery_failures_total`,
    help: "Replies carrying fds (grants, ticket redemptions) whose send failed, by errno: ETOOMANYREFS (the kernel's per-user in-flight fd limit; see vfio_broker_fd_inflight_limit_exempt), EPIPE/ECONNRESET (the client went away), ETIMEDOUT (the client did not read), ...",
    labelNames: ["errno"],
    registers,
  });
  for (const e of DELIVERY_FAILURE_ERRNOS) failures.inc({ errno: e }, 0);
  new Gauge({
    name: `${P}fd_inflight_limit_exempt`,
    help: "1 if brokerd has CAP_SYS_RESOURCE or CAP_SYS_ADMIN, which exempt its fd deliveries from the kernel's per-user limit on fds in flight on Unix sockets; 0 if other processes of its uid can make every delivery fail with ETOOMANYREFS.",
    registers,
    collect() {
      let cap: bigint | undefined;
      try {
        cap = parseCapEff(readFileSync("/proc/self/status", "utf8"));
      } catch {
        cap = undefined;
      }
      this.set(cap !== undefined && inflightExemption(cap).exempt ? 1 : 0);
    },
  });
  const on = (...[errno]: BrokerEvents["fd.undeliverable"]) =>
    failures.inc({ errno: bounded(DELIVERY_FAILURE_ERRNOS, errno) });
  broker.on("fd.undeliverable", on);
  return () => broker.off("fd.undeliverable", on);
}
