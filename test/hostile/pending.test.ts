// Mappings created and never fetched. Each pending mapping holds a backing fd in brokerd, and this
// attack (45 sessions of one uid) used to take all 20000 fds in 4 s: every other client, the admin
// socket and /metrics were refused, 151 MB of stack traces went to stderr, and a SIGHUP then killed
// brokerd (EMFILE reopening the journal). Now pending mappings are a quota per identity (64 by
// default) under a global cap, and a delivered mapping keeps no fd in brokerd at all.
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { describe, it } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import {
  assertAlive,
  assertVictim,
  attacker,
  observe,
  report,
  sample,
  suiteBrokerd,
} from "./support/harness.js";

describe("hostile: pending mappings", () => {
  const suite = suiteBrokerd();

  it("45 sessions of one uid hoarding unfetched mappings get its quota; operators and other uids get in", {
    timeout: 120_000,
  }, async () => {
    const { b, baseline } = suite;
    const watching = observe(b);
    const stderrBefore = b.stderr().length;
    const a = attacker("pending", [b.socket, "45", "200"]);
    await a.phase("holding");
    const held = sample(b);
    // logrotate's SIGHUP while the attacker holds everything it could get: brokerd stays up.
    process.kill(b.pid, "SIGHUP");
    await new Promise((r) => setTimeout(r, 300));
    assertAlive(b);
    // The operator's way in works: the admin socket answers, as root.
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const sessions = await admin.listSessions({}, { timeoutMs: 5000 });
    admin.close();
    a.kill("SIGTERM");
    const r = (await a.result()) as { granted: number; refused: Record<string, number>; messages: string[] };
    const { victim: v, peak: p } = await watching.stop();
    const stderrBytes = b.stderr().length - stderrBefore;
    report("pending mappings hoard", {
      attacker: r,
      victim: v,
      baselineFds: baseline,
      heldFds: held.fds,
      brokerdPeak: p,
      fdLimit: held.fdLimit,
      adminSessionsListed: sessions.sessions.length,
      stderrBytes,
      journalBytes: statSync(b.journal).size,
    });
    assert.ok(r.granted <= 64, `the uid got ${r.granted} pending mappings, over its quota of 64`);
    assert.ok((r.refused.RESOURCE_EXHAUSTED ?? 0) >= 1, "the quota refused the rest");
    assert.ok(
      r.messages.some((m) => /mappings waiting for their fd/.test(m)),
      r.messages.join("\n"),
    );
    // 45 sessions (socket and pidfd each) and 64 pending backings, not thousands.
    assert.ok(p.maxFds < baseline + 2 * 45 + 64 + 64, `brokerd held up to ${p.maxFds} fds`);
    assert.ok(stderrBytes < 64 * 1024, `brokerd wrote ${stderrBytes} bytes to stderr`);
    assertVictim(v);
  });
});
