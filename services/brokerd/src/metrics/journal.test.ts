// Tests for the journal's Prometheus series: values come from the Journal's stats at scrape time,
// every known reason is exported from the start (at 0), and unknown labels become "other".
import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry } from "prom-client";
import type { JournalStats } from "../journal.js";
import { registerJournalMetrics } from "./journal.js";

test("journal series follow the stats; labels are bounded", async () => {
  const stats: JournalStats = {
    linesWritten: 10,
    bytesWritten: 1234,
    dropped: new Map([
      ["ENOSPC", 3],
      ["EWEIRD", 2],
    ]),
    reopenFailures: new Map([["EMFILE", 1]]),
    suppressed: new Map([["fd.delivery", 99]]),
    writable: false,
    aggregationKeys: 2,
  };
  const registry = new Registry();
  registerJournalMetrics(registry, { stats });
  const text = await registry.metrics();
  for (const line of [
    "vfio_broker_journal_lines_total 10",
    "vfio_broker_journal_bytes_total 1234",
    'vfio_broker_journal_lines_dropped_total{reason="ENOSPC"} 3',
    'vfio_broker_journal_lines_dropped_total{reason="other"} 2',
    'vfio_broker_journal_lines_dropped_total{reason="EMFILE"} 0',
    'vfio_broker_journal_reopen_failures_total{reason="EMFILE"} 1',
    'vfio_broker_journal_lines_suppressed_total{event="fd.delivery"} 99',
    'vfio_broker_journal_lines_suppressed_total{event="denied"} 0',
    "vfio_broker_journal_writable 0",
    "vfio_broker_journal_aggregation_keys 2",
  ])
    assert.ok(text.includes(`${line}\n`), `missing ${line}:\n${text}`);
  assert.ok(!text.includes("EWEIRD"));
  stats.linesWritten = 11;
  assert.match(await registry.metrics(), /vfio_broker_journal_lines_total 11\n/);
});
