// Quotas per identity, across all of its sessions. brokerd used to count limits per session, so
// one uid with 4 sessions mapped 4 GiB against a `bytes: 1GiB` rule, and its connections were
// bounded only by the global cap (1024 idle connections locked every other user out). Now the
// policy's limits are the uid's (and its container's) whatever the number of sessions, and a
// session that holds nothing and has no lease is closed when idle.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import { until } from "../lib/brokerd.js";
import {
  assertAlive,
  assertVictim,
  attacker,
  observe,
  report,
  sample,
  startVictim,
  suiteBrokerd,
} from "./support/harness.js";

const POLICY = `version: 1
rules:
  - name: attacker
    match: { uids: [65534] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
    limits: { sessions: 6, deviceFiles: 4, bytes: 32MiB }
  - name: everyone-else
    match: { any: true }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
`;

describe("hostile: quotas per identity", () => {
  const suite = suiteBrokerd({ policyText: POLICY, args: ["--idle-timeout-ms", "1500"] });

  it("bytes, device files and sessions count across all of a uid's sessions", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const victim = startVictim(b);
    // 4 sessions x 16 MiB against 32 MiB: two fit, the other two are refused.
    const a = attacker("sessions", [b.socket, "4", String(16 << 20)]);
    await a.phase("holding");
    a.kill("SIGTERM");
    const bytes = (await a.result()) as {
      open: Record<string, number>;
      map: Record<string, number>;
      messages: string[];
    };
    // 8 sessions against sessions: 6 (and device files: 4): the rest are refused, with reasons.
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    await until("the first attacker's sessions to be gone", async () =>
      (await admin.listSessions({})).sessions.every((x) => x.identity?.uid !== 65534),
    );
    admin.close();
    const s = attacker("sessions", [b.socket, "8", "4096"]);
    await s.phase("holding");
    s.kill("SIGTERM");
    const sessions = (await s.result()) as {
      hello: Record<string, number>;
      open: Record<string, number>;
      messages: string[];
    };
    const v = await victim.stop();
    assertAlive(b);
    report("quotas across sessions", { bytes, sessions, victim: v });
    assert.deepEqual(bytes.open, { OK: 4 });
    assert.deepEqual(bytes.map, { OK: 2, RESOURCE_EXHAUSTED: 2 });
    assert.ok(bytes.messages.some((m) => /32 MiB its quota allows.*across all of its sessions/.test(m)));
    assert.deepEqual(sessions.hello, { OK: 6, RESOURCE_EXHAUSTED: 2 });
    assert.deepEqual(sessions.open, { OK: 4, RESOURCE_EXHAUSTED: 2 });
    assert.ok(
      sessions.messages.some((m) => /uid 65534 has 6 sessions of the 6/.test(m)),
      sessions.messages.join("\n"),
    );
    assert.ok(sessions.messages.some((m) => /4 open device files of the 4/.test(m)));
    assertVictim(v);
  });

  it("1024 idle connections of one uid on broker.sock: others are served, idle sessions are closed", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    await new Promise((r) => setTimeout(r, 300));
    const baseline = b.fdCount();
    const watching = observe(b);
    const a = attacker("hold-connections", [b.socket, "1024", "6000"]);
    const r = (await a.result()) as { opened: number; closedByBroker: number; heldAtEnd: number };
    const { victim: v, peak: p } = await watching.stop();
    report("broker.sock idle connections", {
      attacker: r,
      victim: v,
      baselineFds: baseline,
      brokerdPeak: p,
      after: sample(b),
    });
    assertVictim(v);
    // The uid's 6 sessions (socket and pidfd each) and at most 8 refused ones lingering to say why, plus
    // sockets already refused whose close libuv has not finished when sampled: under CPU load (a
    // 2-core CI machine) up to about 80 seen (115 in all once, 83 on a quiet machine). Far below
    // the 1024 connections the attacker holds open: fds do not grow with them.
    assert.ok(
      p.maxFds <= baseline + 2 * 6 + 8 + 96,
      `brokerd held up to ${p.maxFds} fds (baseline ${baseline})`,
    );
    assert.ok(r.closedByBroker >= 1024, `brokerd closed only ${r.closedByBroker} connections`);
  });
});
