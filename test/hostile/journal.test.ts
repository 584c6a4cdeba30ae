// Hostile clients against the audit journal (docs/design.md §6.7: "a full disk costs lines, not
// availability"). The attacker is uid 65534 flooding the fd channel with tickets that were never
// issued; the victim is uid 1000 mapping through the client library and the CLI. brokerd runs as
// its own process. Each test prints what it measured (console.log) so the figures in
// docs/security.md (section 4) can be reproduced with `node scripts/run-tests.mjs hostile`.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type BrokerProcess, CLI, NOBODY, run, startBrokerd, tempDir, until } from "../lib/brokerd.js";
import {
  AGENTS,
  agent,
  type FloodResult,
  freePort,
  metric,
  readJournal,
  rssKiB,
  sizeOf,
  sleep,
  VICTIM,
  type VictimResult,
} from "./journal-support.js";

// Overridable to reproduce other figures, e.g. HOSTILE_FLOOD_CONNECTIONS=1 for one connection.
const FLOOD_SECONDS = Number(process.env.HOSTILE_FLOOD_SECONDS ?? 12);
const FLOOD_CONNECTIONS = Number(process.env.HOSTILE_FLOOD_CONNECTIONS ?? 4);

/** The CLI as the victim would run it; true when it mapped. */
async function cliMap(b: BrokerProcess): Promise<boolean> {
  const r = await run(
    process.execPath,
    [CLI, "map", "sim0", "BAR2", "--offset", "0", "--length", "4K", "--attr", "wc", "--json"],
    { uid: VICTIM, env: { VFIO_BROKER_SOCKET: b.socket }, timeoutMs: 30_000 },
  );
  return r.code === 0 && JSON.parse(r.stdout).effectiveAttribute === "wc";
}

function assertAlive(b: BrokerProcess): void {
  assert.equal(b.proc.exitCode, null, `brokerd exited (${b.proc.exitCode}):\n${b.stderr().slice(-2000)}`);
  assert.equal(b.proc.signalCode, null, `brokerd was killed by ${b.proc.signalCode}`);
}

describe("hostile: the audit journal", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it("an unknown-ticket flood with the journal on a full 256 KiB tmpfs: brokerd stays up, the victim maps, drops are counted, no torn line", {
    timeout: 120_000,
  }, async () => {
    const fs = tempDir("vfio-broker-jfs-");
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", fs]);
    cleanups.push(() => {
      execFileSync("umount", ["-l", fs]);
      rmSync(fs, { recursive: true, force: true });
    });
    const port = await freePort();
    const journal = join(fs, "journal.jsonl");
    const b = await startBrokerd({ args: ["--journal", journal, "--metrics", `127.0.0.1:${port}`] });
    cleanups.push(() => b.stop());
    // Leave 24 KiB: the victim's own audit lines fill it within seconds, so most of the test runs
    // on a full disk (ENOSPC, short writes), the state an attacker would aim for.
    const st = statfsSync(fs);
    const filler = join(fs, "filler");
    writeFileSync(filler, Buffer.alloc(Math.max(0, st.bavail * st.bsize - 24 * 1024)));
    const rssBefore = rssKiB(b.pid);
    const flood = agent<FloodResult>(
      "journal-flood",
      [b.fdSocket, String(FLOOD_SECONDS), String(FLOOD_CONNECTIONS)],
      NOBODY,
    );
    const victim = agent<VictimResult>("victim", [b.socket, "0", String(FLOOD_SECONDS * 1000)], VICTIM);
    const cli: boolean[] = [];
    for (let i = 0; i < 3; i++) {
      await sleep(2500);
      cli.push(await cliMap(b));
    }
    const [f, v] = await Promise.all([flood, victim]);
    const rssAfter = rssKiB(b.pid);
    const dropped = await metric(port, "vfio_broker_journal_lines_dropped_total");
    const suppressed = await metric(
      port,
      "vfio_broker_journal_lines_suppressed_total",
      'event="fd.delivery"',
    );
    console.log(
      `full-disk flood: ${f.requests} unknown-ticket requests in ${FLOOD_SECONDS} s on ${FLOOD_CONNECTIONS} connections (${f.reconnects} reconnects); ` +
        `victim ${v.ok}/${v.attempts} mapped (p99 ${v.p99Ms} ms), CLI ${cli.filter(Boolean).length}/${cli.length}; ` +
        `journal ${sizeOf(journal)} bytes, ${dropped} lines dropped, ${suppressed} fd.delivery lines aggregated; ` +
        `brokerd RSS ${rssBefore} KiB -> ${rssAfter} KiB, stderr ${b.stderr().length} bytes`,
    );
    assertAlive(b);
    assert.ok(f.requests > 1000, `the flood reached brokerd: ${JSON.stringify(f)}`);
    assert.ok(v.attempts > 0 && v.ok / v.attempts >= 0.99, `victim: ${JSON.stringify(v)}`);
    assert.deepEqual(cli, [true, true, true]);
    assert.ok(dropped > 0, "the full disk dropped lines, and the metric counts them");
    assert.ok(
      suppressed >= f.requests - 10,
      `${suppressed} of ${f.requests} unknown-ticket lines aggregated`,
    );
    assert.ok(rssAfter - rssBefore < 64 * 1024, `RSS grew by ${rssAfter - rssBefore} KiB`);
    const before = readJournal(journal);
    assert.deepEqual(before.torn, [], "every line in the journal is whole JSON");

    // Space again: the journal writes again by itself, and marks the gap it left.
    rmSync(filler);
    // Within a second (the retry interval) the journal's upkeep writes again, starting with the gap.
    await until(
      "the journal writable again",
      async () => (await metric(port, "vfio_broker_journal_writable")) === 1,
    );
    assert.ok(await cliMap(b));
    const later = (await until("a journal.gap line after the disk has space again", () => {
      const j = readJournal(journal);
      return j.lines.some((l) => l.event === "journal.gap") &&
        j.lines.some((l) => l.event === "mapping.create" || l.event === "mapping.grant")
        ? j
        : undefined;
    }))!;
    const gap = later.lines.find((l) => l.event === "journal.gap")!;
    console.log(`after freeing space: ${JSON.stringify(gap)}`);
    assert.ok(Number(gap.dropped) > 0);
    assert.deepEqual(later.torn, []);
    // Every dropped line is accounted for by some journal.gap line (a short one can fit in the
    // space a longer line could not use, so there may be several).
    const inGaps = later.lines
      .filter((l) => l.event === "journal.gap")
      .reduce((n, l) => n + Number(l.dropped), 0);
    assert.equal(inGaps, await metric(port, "vfio_broker_journal_lines_dropped_total"));
    assert.equal(await metric(port, "vfio_broker_journal_writable"), 1);
  });

  it("the journal's directory deleted, then SIGHUP: brokerd keeps serving and counts drops; directory back + SIGHUP: it writes again", {
    timeout: 60_000,
  }, async () => {
    const dir = tempDir("vfio-broker-jdir-");
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const jdir = join(dir, "log");
    mkdirSync(jdir);
    const journal = join(jdir, "journal.jsonl");
    const port = await freePort();
    const b = await startBrokerd({ args: ["--journal", journal, "--metrics", `127.0.0.1:${port}`] });
    cleanups.push(() => b.stop());
    assert.ok(await cliMap(b));

    rmSync(jdir, { recursive: true });
    b.proc.kill("SIGHUP");
    await until(
      "the policy reload that SIGHUP also does",
      () => b.proc.exitCode !== null || b.stderr().includes("policy reloaded"),
    );
    assertAlive(b);
    const v = await agent<VictimResult>("victim", [b.socket, "0", "3000"], VICTIM);
    assertAlive(b);
    const dropped = await metric(port, "vfio_broker_journal_lines_dropped_total");
    console.log(
      `directory gone: victim ${v.ok}/${v.attempts}, ${dropped} lines dropped; stderr says: ${
        b
          .stderr()
          .split("\n")
          .find((l) => l.includes("journal")) ?? "(nothing)"
      }`,
    );
    assert.equal(v.ok, v.attempts, JSON.stringify(v));
    assert.ok(dropped > 0, "lines written while the directory is gone are counted as dropped");
    assert.match(b.stderr(), /journal/);
    assert.equal(await metric(port, "vfio_broker_journal_writable"), 0);

    mkdirSync(jdir);
    b.proc.kill("SIGHUP");
    await until("the second SIGHUP handled", () => b.stderr().split("policy reloaded").length === 3);
    assert.ok(await cliMap(b));
    // The victim's grants above may have used up its uid's 64 full lines of the 10 s window (churn
    // aggregation, docs/security.md section 4): then the new mapping is counted in a summary line.
    const mappingLine = (e: unknown) =>
      ["mapping.create", "mapping.grant", "mapping.create.suppressed", "mapping.grant.suppressed"].includes(
        String(e),
      );
    const j = (await until("the new mapping in the new journal", () => {
      const r = readJournal(journal);
      return r.lines.some((l) => mappingLine(l.event)) ? r : undefined;
    }))!;
    const gap = j.lines.find((l) => l.event === "journal.gap");
    assert.ok(
      gap && Number(gap.dropped) >= dropped,
      `a journal.gap line counts the drops: ${JSON.stringify(gap)}`,
    );
    assert.deepEqual(j.torn, []);
    assert.equal(await metric(port, "vfio_broker_journal_writable"), 1);
    assertAlive(b);
  });

  it("SIGHUP (logrotate) while an attacker holds every fd brokerd may open: brokerd stays up, keeps the old journal fd, reopens later", {
    timeout: 90_000,
  }, async () => {
    const port = await freePort();
    const b = await startBrokerd({ args: ["--metrics", `127.0.0.1:${port}`] });
    cleanups.push(() => b.stop());
    assert.ok(await cliMap(b));
    const limit = b.fdCount() + 16;
    execFileSync("prlimit", ["--pid", String(b.pid), `--nofile=${limit}:${limit}`]);
    const holder = spawn(process.execPath, [join(AGENTS, "journal-hold.js"), b.fdSocket, "64", "60"], {
      uid: NOBODY,
      gid: NOBODY,
      stdio: ["ignore", "pipe", "inherit"],
    });
    cleanups.push(() => {
      holder.kill("SIGKILL");
    });
    let out = "";
    holder.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
    });
    await until("the attacker's connections", () => out.includes("holding"), 20_000);
    await until(`brokerd at its fd limit (${limit})`, () => b.fdCount() >= limit - 1, 20_000);
    renameSync(b.journal, `${b.journal}.1`);
    b.proc.kill("SIGHUP");
    await until(
      "the SIGHUP's policy reload attempt",
      () => b.proc.exitCode !== null || /policy (NOT )?reloaded/.test(b.stderr()),
    );
    await sleep(1500); // the journal's retries run into EMFILE too
    assertAlive(b);
    holder.kill("SIGTERM");
    await until("the attacker's fds released", () => b.fdCount() < limit - 8, 20_000);
    // The journal retries the reopen every second by itself; no second SIGHUP is needed.
    await until("the journal reopened (a new file at the path)", () => existsSync(b.journal), 10_000);
    assert.ok(await cliMap(b));
    const fresh = (await until("the reopened journal with the new mapping", () => {
      const j = readJournal(b.journal);
      return j.lines.some((l) => l.event === "mapping.create" || l.event === "mapping.grant") ? j : undefined;
    }).catch((e) => {
      throw new Error(
        `${(e as Error).message}\nnew file: ${sizeOf(b.journal)} bytes; rotated: ${JSON.stringify(
          readJournal(`${b.journal}.1`).lines.map((l) => l.event),
        )}\nstderr: ${b.stderr().slice(-3000)}`,
      );
    }))!;
    const reopenFailures = await metric(port, "vfio_broker_journal_reopen_failures_total", 'reason="EMFILE"');
    const dropped = await metric(port, "vfio_broker_journal_lines_dropped_total");
    console.log(
      `fds exhausted at SIGHUP: ${reopenFailures} reopen failures (EMFILE), ${dropped} lines dropped; ` +
        `rotated file ${sizeOf(`${b.journal}.1`)} bytes, new file ${fresh.lines.length} lines`,
    );
    assertAlive(b);
    assert.ok(reopenFailures >= 1);
    assert.equal(dropped, 0, "the old fd kept working, so nothing was lost");
    assert.deepEqual(fresh.torn, []);
    const rotated = readJournal(`${b.journal}.1`);
    assert.deepEqual(rotated.torn, []);
    assert.ok(
      rotated.lines.some((l) => l.event === "policy.reload"),
      "the line of the SIGHUP's own policy reload went to the old fd, during EMFILE",
    );
  });

  it("journal bytes per second under an unknown-ticket flood are bounded; the flood is summarised per uid", {
    timeout: 120_000,
  }, async () => {
    const b = await startBrokerd();
    cleanups.push(() => b.stop());
    assert.ok(await cliMap(b));
    const size0 = sizeOf(b.journal);
    const rss0 = rssKiB(b.pid);
    const t0 = performance.now();
    const f = await agent<FloodResult>(
      "journal-flood",
      [b.fdSocket, String(FLOOD_SECONDS), String(FLOOD_CONNECTIONS)],
      NOBODY,
    );
    const seconds = (performance.now() - t0) / 1000;
    const bytes = sizeOf(b.journal) - size0;
    const rss1 = rssKiB(b.pid);
    const rate = bytes / seconds;
    console.log(
      `journal under flood: ${f.requests} requests (${Math.round(f.requests / seconds)}/s) on ${FLOOD_CONNECTIONS} connections -> ` +
        `${bytes} journal bytes in ${seconds.toFixed(1)} s = ${Math.round(rate)} B/s (${Math.round(rate / FLOOD_CONNECTIONS)} B/s per connection); brokerd RSS ${rss0} KiB -> ${rss1} KiB, stderr ${b.stderr().length} bytes`,
    );
    assertAlive(b);
    assert.ok(f.requests > 1000, JSON.stringify(f));
    assert.ok(rate < 20 * 1024, `journal grows ${Math.round(rate)} B/s under the flood`);
    // The flood is not lost: summaries count it, per uid and result.
    const summarised = (await until(
      "the summaries to cover the flood",
      () => {
        const { lines } = readJournal(b.journal);
        const full = lines.filter((l) => l.event === "fd.delivery" && l.result === "unknown").length;
        const counted = lines
          .filter((l) => l.event === "fd.delivery.suppressed" && l.uid === NOBODY && l.result === "unknown")
          .reduce((n, l) => n + Number(l.count), 0);
        return full + counted === f.requests ? { full, counted } : undefined;
      },
      30_000,
      250,
    ))!;
    console.log(`  ${summarised.full} full fd.delivery lines + ${summarised.counted} counted in summaries`);
  });
});
