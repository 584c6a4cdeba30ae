// The audit journal's own health as Prometheus series: lines and bytes written, lines dropped by
// reason, failed reopens, events aggregated instead of written, whether it writes now. Values are
// read from the Journal at scrape time (collect()), so they cannot drift from what it counted;
// labels take values only from JOURNAL_DROP_REASONS and JOURNAL_AGGREGATED_EVENTS.
import { Counter, Gauge, type Registry } from "prom-client";
import type { JournalStats } from "../journal.js";
import { bounded, JOURNAL_AGGREGATED_EVENTS, JOURNAL_DROP_REASONS } from "./labels.js";

const P = "vfio_broker_journal_";

export function registerJournalMetrics(registry: Registry, journal: { readonly stats: JournalStats }): void {
  const registers = [registry];
  /** Sets a labelled counter to the journal's totals (counters only go up; so do the journal's). */
  const fill = (
    c: Counter<string>,
    label: string,
    known: readonly string[],
    m: ReadonlyMap<string, number>,
  ) => {
    c.reset();
    for (const k of known) c.inc({ [label]: k }, 0);
    for (const [k, n] of m) c.inc({ [label]: bounded(known, k) }, n);
  };

  new Counter({
    name: `${P}lines_total`,
    help: "Audit journal lines written (including summaries and journal.gap lines).",
    registers,
    collect() {
      this.reset();
      this.inc(journal.stats.linesWritten);
    },
  });
  new Counter({
    name: `${P}bytes_total`,
    help: "Bytes of audit journal lines written.",
    registers,
    collect() {
      this.reset();
      this.inc(journal.stats.bytesWritten);
    },
  });
  new Counter({
    name: `${P}lines_dropped_total`,
    help: "Audit journal lines that could not be written and were dropped, by reason (errno such as ENOSPC, EMFILE, EIO, ENOENT).",
    labelNames: ["reason"],
    registers,
    collect() {
      fill(this, "reason", [...JOURNAL_DROP_REASONS, "other"], journal.stats.dropped);
    },
  });
  new Counter({
    name: `${P}reopen_failures_total`,
    help: "Failed reopens of the audit journal file (SIGHUP, or the file was deleted), by errno.",
    labelNames: ["reason"],
    registers,
    collect() {
      fill(this, "reason", [...JOURNAL_DROP_REASONS, "other"], journal.stats.reopenFailures);
    },
  });
  new Counter({
    name: `${P}lines_suppressed_total`,
    help: 'Repeated events counted into per-identity summary lines instead of written one by one, by event ("other": the bounded table was full).',
    labelNames: ["event"],
    registers,
    collect() {
      fill(this, "event", JOURNAL_AGGREGATED_EVENTS, journal.stats.suppressed);
    },
  });
  new Gauge({
    name: `${P}writable`,
    help: "1 while audit journal lines reach the file (or stderr), 0 while they are being dropped.",
    registers,
    collect() {
      this.set(journal.stats.writable ? 1 : 0);
    },
  });
  new Gauge({
    name: `${P}aggregation_keys`,
    help: "Identity and result pairs the journal is aggregating now (bounded).",
    registers,
    collect() {
      this.set(journal.stats.aggregationKeys);
    },
  });
}
