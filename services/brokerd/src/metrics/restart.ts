// Restarts and the state store as Prometheus series: which run this is (starts recorded in the
// state store), what the start reconciled and how long it took, sessions resumed and waiting to
// be, and the store's own writes. Read at scrape time from the daemon's objects, so they cannot
// drift; no label carries anything a client chooses.
import { Counter, Gauge, type Registry } from "prom-client";
import type { Broker } from "../broker.js";
import type { RestoreReport } from "../state/restore.js";
import type { StoreStats } from "../state/store.js";

const P = "vfio_broker_";

export interface RestartSource {
  restore: RestoreReport & { run: number };
  ledger: { readonly stats: StoreStats & { failures: number } };
}

export function registerRestartMetrics(registry: Registry, broker: Broker, src: RestartSource): void {
  const registers = [registry];
  const total = (name: string, help: string, value: () => number) =>
    new Counter({
      name: `${P}${name}`,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value());
      },
    });
  new Gauge({
    name: `${P}run`,
    help: "How many times brokerd has started on this state directory (this boot); 1 on a fresh one.",
    registers,
    collect() {
      this.set(src.restore.run);
    },
  });
  new Gauge({
    name: `${P}reconciled_sessions`,
    help: 'Sessions the last start found in the state store, by decision: "detached" (process alive, waits for its resume) or "released" (process gone).',
    labelNames: ["action"],
    registers,
    collect() {
      for (const action of ["detached", "released"] as const)
        this.set({ action }, src.restore.decisions.filter((d) => d.action === action).length);
    },
  });
  new Gauge({
    name: `${P}reconcile_seconds`,
    help: "How long the last start took to restore and reconcile the state store.",
    registers,
    collect() {
      this.set(src.restore.ms / 1000);
    },
  });
  new Gauge({
    name: `${P}sessions_detached`,
    help: "Sessions restored after the restart that their client has not resumed yet.",
    registers,
    collect() {
      this.set(broker.detachedCount);
    },
  });
  let resumed = 0;
  broker.on("session.resume", () => {
    resumed++;
  });
  total(
    "sessions_resumed_total",
    "Sessions their client took up again after a restart (Hello with its resume token).",
    () => resumed,
  );
  total("state_records_total", "Records written to the state store.", () => src.ledger.stats.appends);
  total("state_bytes_total", "Bytes written to the state store's log.", () => src.ledger.stats.bytes);
  total(
    "state_compactions_total",
    "Snapshots written (the log compacted).",
    () => src.ledger.stats.compactions,
  );
  total(
    "state_compaction_failures_total",
    "Compactions that failed (a full disk): the store stayed as it was and compacts at a later write.",
    () => src.ledger.stats.compactFailures,
  );
  total(
    "state_write_failures_total",
    "State store writes that failed (releases; failed creations were refused to the client).",
    () => src.ledger.stats.failures,
  );
}
