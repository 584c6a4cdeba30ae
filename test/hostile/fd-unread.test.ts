// Issue 18 row 4: FdBatch grants pipelined on the fd channel, their replies (16 fds each) never
// read. The kernel keeps the fds of sent-but-unread replies in the receiving socket's queue (in
// flight, one open file each), and they stay there for as long as the receiver keeps the socket
// open, even after brokerd closed its end. Before: system open files grew by hundreds of thousands
// and brokerd kept reading and answering. Now brokerd counts the fds of the replies each connection
// has not read (SIOCOUTQ), stops reading a connection that holds a batch's worth, stops reading an
// identity's connections while its unreadFds quota is used up, and keeps a connection whose replies
// are unread (counted) until the peer reads them or goes away.
import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { describe, it } from "node:test";
import { assertVictim, attacker, observe, report, sample, suiteBrokerd } from "./support/harness.js";

const SECONDS = Number(process.env.HOSTILE_UNREAD_SECONDS ?? 10);
const SESSIONS = Number(process.env.HOSTILE_UNREAD_SESSIONS ?? 4);
const CONNECTIONS = Number(process.env.HOSTILE_UNREAD_CONNECTIONS ?? 16);

/** Allocated file handles of the whole system (the first field of /proc/sys/fs/file-nr). */
function openFiles(): number {
  return Number(readFileSync("/proc/sys/fs/file-nr", "utf8").split(/\s+/)[0]);
}

/** Unreclaimable kernel slab, MB (/proc/meminfo SUnreclaim). */
function slabMB(): number {
  const kb = Number(/SUnreclaim:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0);
  return Math.round(kb / 102.4) / 10;
}

describe("hostile: fd-channel replies never read", () => {
  const suite = suiteBrokerd();

  it("one uid pipelining FdBatch grants without reading holds a bounded number of fds in flight", {
    timeout: 180_000,
  }, async () => {
    const { b } = suite;
    const before = { openFiles: openFiles(), slabMB: slabMB(), rssMB: sample(b).rssMB };
    const journalBefore = statSync(b.journal).size;
    const watching = observe(b);
    const a = attacker("fd-unread", [
      b.socket,
      b.fdSocket,
      String(SECONDS),
      String(SESSIONS),
      String(CONNECTIONS),
    ]);
    let peakOpenFiles = before.openFiles;
    const t = setInterval(() => {
      peakOpenFiles = Math.max(peakOpenFiles, openFiles());
    }, 100);
    await a.phase("holding");
    // The attacker still holds every socket it opened: what is in flight now stays until it exits.
    await new Promise((r) => setTimeout(r, 1000));
    const holding = { openFiles: openFiles(), slabMB: slabMB(), rssMB: sample(b).rssMB };
    clearInterval(t);
    const journalBytes = statSync(b.journal).size - journalBefore;
    a.kill("SIGTERM");
    const r = (await a.result()) as { batches: number; reconnects: number; sockets: number };
    const { victim: v, peak } = await watching.stop();
    await new Promise((r) => setTimeout(r, 500));
    const afterExit = { openFiles: openFiles(), slabMB: slabMB(), rssMB: sample(b).rssMB };
    report("fd replies never read", {
      seconds: SECONDS,
      sessions: SESSIONS,
      connectionsPerSession: CONNECTIONS,
      attacker: r,
      before,
      holding,
      peakOpenFiles,
      afterExit,
      openFilesHeld: holding.openFiles - before.openFiles,
      journalBytes,
      journalBytesPerSecond: Math.round(journalBytes / SECONDS),
      brokerdPeak: peak,
      victim: v,
    });
    // The uid's unreadFds quota (256) plus one batch per connection it may have in service, the
    // victim's files, and whatever else runs on the machine (file-nr is system-wide): a few
    // thousand, never the hundreds of thousands of before.
    assert.ok(
      holding.openFiles - before.openFiles < 20_000,
      `the attacker holds ${holding.openFiles - before.openFiles} more open files in the system`,
    );
    assert.ok(holding.rssMB - before.rssMB < 100, `brokerd's RSS grew by ${holding.rssMB - before.rssMB} MB`);
    assert.ok(journalBytes / SECONDS < 200_000, `the journal grew by ${journalBytes} bytes`);
    assertVictim(v);
  });
});
