// brokerd's Prometheus metrics (prom-client): what the Broker hands out and how it goes. Counters
// and histograms are fed by the Broker's typed events; gauges are computed at scrape time
// (collect()) from broker.sessions and broker.allDevices(), so they can never drift from the
// truth. It only reads: it never changes broker state, and never labels a series with a session
// id, cookie, pid, uid or anything a client chooses (see labels.ts).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { type Broker, type BrokerEvents, VERSION } from "../broker.js";
import type { Mapping } from "../grants/device-file.js";
import type { JournalStats } from "../journal.js";
import { registerFdDeliveryMetrics } from "./fd-delivery.js";
import { registerJournalMetrics } from "./journal.js";
import {
  ATTRIBUTES,
  bounded,
  CONNECTION_REFUSAL_REASONS,
  DENY_REASONS,
  FD_RESULTS,
  HEALTH_STATES,
  REFUSAL_CODES,
  REFUSAL_REASONS,
  RELEASE_REASONS,
  REVOCATION_REASONS,
  SESSION_END_REASONS,
} from "./labels.js";
import { type RestartSource, registerRestartMetrics } from "./restart.js";

const P = "vfio_broker_";

/** Latency buckets, seconds: 50 µs .. 2.5 s (CreateMapping and fd delivery are sub-millisecond). */
const FAST_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5,
];

export interface BrokerMetrics {
  registry: Registry;
  /** Unsubscribes from the broker's events. */
  detach(): void;
}

export function createBrokerMetrics(
  broker: Broker,
  opts: {
    processMetrics?: boolean;
    journal?: { readonly stats: JournalStats };
    restart?: RestartSource;
  } = {},
): BrokerMetrics {
  const registry = new Registry();
  if (opts.journal) registerJournalMetrics(registry, opts.journal);
  if (opts.restart) registerRestartMetrics(registry, broker, opts.restart);
  const detachFdDelivery = registerFdDeliveryMetrics(registry, broker);
  const registers = [registry];
  if (opts.processMetrics !== false) {
    collectDefaultMetrics({ register: registry });
    // prom-client names these gauges *_total, which promtool rejects ("non-counter metrics should not
    // have _total suffix"); the same numbers are in nodejs_active_{handles,requests,resources}{type}.
    for (const name of [
      "nodejs_active_handles_total",
      "nodejs_active_requests_total",
      "nodejs_active_resources_total",
    ])
      registry.removeSingleMetric(name);
  }

  new Gauge({
    name: `${P}build_info`,
    help: "Always 1; the version label says which brokerd is running.",
    labelNames: ["version"],
    registers,
    collect() {
      this.set({ version: VERSION }, 1);
    },
  });

  // ---- live state, computed at scrape time ------------------------------------------------------

  new Gauge({
    name: `${P}sessions`,
    help: "Client sessions connected now.",
    registers,
    collect() {
      this.set(broker.sessions.size);
    },
  });

  const perDevice = () => {
    const devices = new Map<
      string,
      { files: number; entries: number; depth: number; bytes: bigint; mappings: Map<string, number> }
    >();
    for (const d of broker.allDevices())
      devices.set(d.info.id, { files: 0, entries: 0, depth: 0, bytes: 0n, mappings: new Map() });
    for (const s of broker.sessions.values())
      for (const df of s.deviceFiles.values()) {
        let d = devices.get(df.device.id);
        if (!d) {
          d = { files: 0, entries: 0, depth: 0, bytes: 0n, mappings: new Map() };
          devices.set(df.device.id, d);
        }
        d.files++;
        d.entries += df.tree.size;
        d.depth = Math.max(d.depth, df.tree.depth);
        for (const m of df.mappings.values()) {
          const key = `${m.region.name}\u0000${m.effectiveAttribute}`;
          d.mappings.set(key, (d.mappings.get(key) ?? 0) + 1);
          d.bytes += m.length;
        }
      }
    return devices;
  };

  new Gauge({
    name: `${P}device_files_open`,
    help: "DeviceFiles (clients' open views of a device) open now, by device.",
    labelNames: ["device"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice()) this.set({ device }, d.files);
    },
  });

  new Gauge({
    name: `${P}mappings_live`,
    help: "Mappings live now (pending or delivered), by device, region and effective attribute.",
    labelNames: ["device", "region", "attribute"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice())
        for (const [key, n] of d.mappings) {
          const [region, attribute] = key.split("\u0000") as [string, string];
          this.set({ device, region, attribute }, n);
        }
    },
  });

  new Gauge({
    name: `${P}mapped_bytes`,
    help: "Bytes of device regions mapped by live mappings, by device.",
    labelNames: ["device"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice()) this.set({ device }, Number(d.bytes));
    },
  });

  new Gauge({
    name: `${P}maple_tree_entries`,
    help: "MapleTree entries (region compat ranges and mapping aliases), summed over the device's DeviceFiles.",
    labelNames: ["device"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice()) this.set({ device }, d.entries);
    },
  });

  new Gauge({
    name: `${P}maple_tree_max_depth`,
    help: "Deepest MapleTree (levels of nodes) among the device's DeviceFiles; 0 when none is open.",
    labelNames: ["device"],
    registers,
    collect() {
      this.reset();
      for (const [device, d] of perDevice()) this.set({ device }, d.depth);
    },
  });

  new Gauge({
    name: `${P}device_health`,
    help: "1 for the device's current health state, 0 for the others.",
    labelNames: ["device", "state"],
    registers,
    collect() {
      this.reset();
      for (const d of broker.allDevices()) {
        const now = broker.healthOf(d.info.id);
        for (const state of HEALTH_STATES) this.set({ device: d.info.id, state }, now === state ? 1 : 0);
      }
    },
  });

  new Gauge({
    name: `${P}tickets_outstanding`,
    help: "Mappings created whose ticket has not been redeemed on the fd channel yet.",
    registers,
    collect() {
      let n = 0;
      for (const s of broker.sessions.values())
        for (const df of s.deviceFiles.values())
          for (const m of df.mappings.values()) if (m.state === "pending") n++;
      this.set(n);
    },
  });

  // ---- event counters and histograms ------------------------------------------------------------

  const sessionsOpened = new Counter({
    name: `${P}sessions_opened_total`,
    help: "Sessions opened.",
    registers,
  });
  const sessionsEnded = new Counter({
    name: `${P}sessions_ended_total`,
    help: "Sessions ended, by reason (disconnect, process-exit, lease-expired, revoked, shutdown, ...).",
    labelNames: ["reason"],
    registers,
  });
  const leaseCleanup = new Histogram({
    name: `${P}lease_cleanup_duration_seconds`,
    help: "Time to release everything a session held when it ended (mappings, device files, pidfd).",
    buckets: FAST_BUCKETS,
    registers,
  });
  const deviceFilesOpened = new Counter({
    name: `${P}device_files_opened_total`,
    help: "DeviceFiles opened, by device.",
    labelNames: ["device"],
    registers,
  });
  const grants = new Counter({
    name: `${P}mapping_grants_total`,
    help: 'Mappings granted by CreateMapping, by device, region, effective attribute and result ("exact" or "fallback").',
    labelNames: ["device", "region", "attribute", "result"],
    registers,
  });
  const refusals = new Counter({
    name: `${P}mapping_refusals_total`,
    help: "CreateMapping calls refused, by gRPC code and reason (range, attribute_conflict, limit:bytes, policy:attribute, ...).",
    labelNames: ["code", "reason"],
    registers,
  });
  const releases = new Counter({
    name: `${P}mapping_releases_total`,
    help: "Mappings released, by device and reason (client, operator, ticket-expired, disconnect, device-drain, ...).",
    labelNames: ["device", "reason"],
    registers,
  });
  const createLatency = new Histogram({
    name: `${P}create_mapping_duration_seconds`,
    help: "Time brokerd spent in a successful CreateMapping (policy, backing, cookie allocation, ticket).",
    buckets: FAST_BUCKETS,
    registers,
  });
  const fdDeliveries = new Counter({
    name: `${P}fd_deliveries_total`,
    help: "fd deliveries on the fd channel (ticket redemptions and fast-path grants), by result (ok, expired, already_used, wrong_peer, ...). ok counts fds handed to the send; a send the kernel then refused is in fd_delivery_failures_total.",
    labelNames: ["result"],
    registers,
  });
  const fdLatency = new Histogram({
    name: `${P}fd_delivery_duration_seconds`,
    help: "Time brokerd spent redeeming a ticket on the fd channel, by result; a fast-path grant's delivery adds no work of its own and counts as 0 (its time is in create_mapping_duration_seconds).",
    labelNames: ["result"],
    buckets: FAST_BUCKETS,
    registers,
  });
  const ticketsExpired = new Counter({
    name: `${P}tickets_expired_total`,
    help: "Tickets that expired unredeemed (their pending mapping was dropped).",
    registers,
  });
  const ticketsRefused = new Counter({
    name: `${P}tickets_refused_total`,
    help: "Tickets presented on the fd channel and refused, by reason.",
    labelNames: ["reason"],
    registers,
  });
  const denials = new Counter({
    name: `${P}policy_denials_total`,
    help: "Requests the policy denied, by reason (no_rule, device, region, attribute, prot, read_write).",
    labelNames: ["reason"],
    registers,
  });
  const revocations = new Counter({
    name: `${P}revocations_total`,
    help: "Revocations (operator mapping/session revokes, device drain, device gone), by reason.",
    labelNames: ["reason"],
    registers,
  });
  const revokedMappings = new Counter({
    name: `${P}revoked_mappings_total`,
    help: "Mappings taken away by revocations, by reason.",
    labelNames: ["reason"],
    registers,
  });
  const policyReloads = new Counter({
    name: `${P}policy_reloads_total`,
    help: 'Policy reloads, by result ("ok" or "error": the old policy stays).',
    labelNames: ["result"],
    registers,
  });
  const healthChanges = new Counter({
    name: `${P}device_health_changes_total`,
    help: "Device health transitions, by device and new state.",
    labelNames: ["device", "state"],
    registers,
  });

  const connectionsRefused = new Counter({
    name: `${P}connections_refused_total`,
    help: "Connections refused before they got a session or slot, by socket (broker, fd, admin) and reason (limit:sessions, limit:fdConnections, limit:global_*, draining, not_admin; HTTP/2 abuse: limit:resets, limit:headers, protocol, settings-timeout, then backoff).",
    labelNames: ["socket", "reason"],
    registers,
  });

  new Gauge({
    name: `${P}revoking_mappings`,
    help: "Revoked mappings whose holder has not unmapped them yet (it may still map them): their pages and quota stay booked until it releases them or exits.",
    registers,
    collect() {
      this.set(broker.holds.size);
    },
  });
  new Gauge({
    name: `${P}revoking_bytes`,
    help: "Bytes of revoked mappings still held (see revoking_mappings).",
    registers,
    collect() {
      this.set(Number(broker.holds.bytes));
    },
  });
  const unholds = new Counter({
    name: `${P}revoked_mapping_unmaps_total`,
    help: 'Revoked mappings whose booking ended, by how ("release": the holder released it, "exit": its process exited).',
    labelNames: ["how"],
    registers,
  });
  const enforced = new Counter({
    name: `${P}revocations_enforced_total`,
    help: 'Holders brokerd killed (SIGKILL through their pidfd) because they kept a revoked mapping past its grace, by result ("killed", "gone": it had exited, "error": e.g. EPERM without CAP_KILL).',
    labelNames: ["result"],
    registers,
  });
  for (const how of ["release", "exit"]) unholds.inc({ how }, 0);
  enforced.inc({ result: "killed" }, 0);

  new Gauge({
    name: `${P}pending_mappings`,
    help: "Mappings created whose fd was not fetched yet (each holds one backing fd in brokerd).",
    registers,
    collect() {
      this.set(broker.pendingMappings);
    },
  });

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

  // Zero the known series so rate() and absent() work from the first scrape.
  for (const r of FD_RESULTS) fdDeliveries.inc({ result: r }, 0);
  for (const r of DENY_REASONS) denials.inc({ reason: r }, 0);
  for (const r of REVOCATION_REASONS) {
    revocations.inc({ reason: r }, 0);
    revokedMappings.inc({ reason: r }, 0);
  }
  for (const r of ["ok", "error"]) policyReloads.inc({ result: r }, 0);

  const created = (m: Mapping, ms: number) => {
    grants.inc({
      device: m.deviceFile.device.id,
      region: m.region.name,
      attribute: bounded(ATTRIBUTES, m.effectiveAttribute),
      result: m.effectiveAttribute === m.requestedAttribute ? "exact" : "fallback",
    });
    createLatency.observe(ms / 1000);
  };

  const on: Partial<Handlers> = {
    "session.open": () => sessionsOpened.inc(),
    "session.end": (_s, reason, ms) => {
      sessionsEnded.inc({ reason: bounded(SESSION_END_REASONS, reason) });
      leaseCleanup.observe(ms / 1000);
    },
    "devicefile.open": (df) => deviceFilesOpened.inc({ device: df.device.id }),
    "mapping.refused": (code, reason) =>
      refusals.inc({ code: bounded(REFUSAL_CODES, code), reason: bounded(REFUSAL_REASONS, reason) }),
    "mapping.create": (m, ms) => created(m, ms),
    // The fast path: a creation and an ok delivery at once (the delivery's time is in the creation's).
    "mapping.grant": (m, ms) => {
      created(m, ms);
      fdDeliveries.inc({ result: "ok" });
      fdLatency.observe({ result: "ok" }, 0);
    },
    "mapping.release": (m, reason) => {
      const r = bounded(RELEASE_REASONS, reason);
      releases.inc({ device: m.deviceFile.device.id, reason: r });
      if (r === "ticket-expired") ticketsExpired.inc();
    },
    "fd.delivery": (result, _m, ms) => {
      const r = bounded(FD_RESULTS, result);
      fdDeliveries.inc({ result: r });
      fdLatency.observe({ result: r }, ms / 1000);
      if (r !== "ok") ticketsRefused.inc({ reason: r });
    },
    denied: (_s, reason) => denials.inc({ reason: bounded(DENY_REASONS, reason) }),
    revocation: (reason, count) => {
      const r = bounded(REVOCATION_REASONS, reason);
      revocations.inc({ reason: r });
      revokedMappings.inc({ reason: r }, count);
    },
    "mapping.unhold": (_h, how) => unholds.inc({ how: bounded(["release", "exit"], how) }),
    "mapping.revoke.enforced": (_hs, result) =>
      enforced.inc({ result: bounded(["killed", "gone", "error"], result) }),
    "policy.reload": (ok) => policyReloads.inc({ result: ok ? "ok" : "error" }),
    "connection.refused": (socket, _peer, reason) =>
      connectionsRefused.inc({
        socket: bounded(["broker", "fd", "admin"], socket),
        reason: bounded(CONNECTION_REFUSAL_REASONS, reason),
      }),
    "device.health": (device, health) => healthChanges.inc({ device, state: bounded(HEALTH_STATES, health) }),
  };
  for (const [event, fn] of Object.entries(on)) broker.on(event as keyof Handlers, fn as never);

  return {
    registry,
    detach() {
      detachFdDelivery();
      for (const [event, fn] of Object.entries(on)) broker.off(event as keyof Handlers, fn as never);
    },
  };
}

type Handlers = { [K in keyof BrokerEvents]: (...args: BrokerEvents[K]) => void };
