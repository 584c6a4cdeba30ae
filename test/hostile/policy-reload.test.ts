// A policy reload that takes something away used to revoke nothing: live mappings stayed, and the
// client could no longer ReleaseMapping or CloseDevice them (stuck until it disconnected). Now a
// reload revokes, with reason "policy" on the lease, every mapping, device file and session the
// new policy no longer allows, and what is left can always be released.
import assert from "node:assert/strict";
import { chmodSync, writeFileSync } from "node:fs";
import { describe, it } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import { type BrokerProcess, CLI, until } from "../lib/brokerd.js";
import { ATTACKER, assertAlive, report, spawnAs, suiteBrokerd } from "./support/harness.js";

// The victim (uid 4242) keeps its own rule through every reload: what the reload takes from the
// workload must not touch it.
const rule = (attributes: string, devices = '["sim*"]', uids = "[65534]") => `version: 1
rules:
  - name: victim
    match: { uids: [4242] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
  - name: workload
    match: { uids: ${uids} }
    devices: ${devices}
    regions: ["*"]
    attributes: ${attributes}
    prot: [r, rw]
    readWrite: true
`;

/** A CLI --hold mapping as uid 65534: its output, exit code, and a wait for it to have mapped. */
function hold(b: BrokerProcess, region: string, attr: string) {
  const p = spawnAs(
    ATTACKER,
    [CLI, "map", "sim0", region, "--offset", "0", "--length", "4K", "--attr", attr, "--hold", "--json"],
    { ...process.env, VFIO_BROKER_SOCKET: b.socket },
  );
  return { ...p, mapped: () => until("the CLI to map", () => p.out().includes('"cookie"'), 15_000) };
}

describe("hostile: policy reload revokes", () => {
  const suite = suiteBrokerd({ policyText: rule("[UC, WC]") });
  const admin = () => createClient(AdminService, `unix:${suite.b.adminSocket}`);
  const setPolicy = (text: string) => {
    writeFileSync(suite.b.policyPath, text);
    chmodSync(suite.b.policyPath, 0o644);
  };

  it("a reload that drops WC revokes the WC mapping (reason policy), keeps the UC one, and release works", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const wc = hold(b, "BAR2", "wc");
    const uc = hold(b, "BAR0", "uc");
    await wc.mapped();
    await uc.mapped();
    setPolicy(rule("[UC]"));
    process.kill(b.pid, "SIGHUP");
    const code = await wc.exited;
    assert.equal(code, 3, `the WC holder exits 3 on revocation:\n${wc.out()}\n${wc.err()}`);
    assert.match(wc.out(), /"revoked":\{"reason":"policy"/);
    // The UC mapping is still allowed and still there; its holder releases it cleanly.
    const a = admin();
    const mine = async () => (await a.listMappings({})).mappings.filter((m) => m.identity?.uid === ATTACKER);
    const left = await mine();
    assert.deepEqual(
      left.map((m) => m.mapping?.regionIndex),
      [0],
      "only the UC mapping of BAR0 is left",
    );
    uc.child.kill("SIGTERM");
    assert.equal(await uc.exited, 0, `the UC holder released and exited 0:\n${uc.err()}`);
    await until(
      "the UC mapping to be released",
      async () => (await a.listMappings({})).mappings.length === 0,
    );
    a.close();
    report("policy reload drops WC", { wcHolderExit: code, wcHolderOut: wc.out().trim().split("\n").pop() });
  });

  it("a reload that no longer names the uid ends its session (LeaseEnded policy) and releases everything", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    setPolicy(rule("[UC, WC]"));
    process.kill(b.pid, "SIGHUP");
    await new Promise((r) => setTimeout(r, 300));
    const h = hold(b, "BAR2", "wc");
    await h.mapped();
    setPolicy(rule("[UC, WC]", '["sim*"]', "[4242]"));
    const a = admin();
    const r = await a.reloadPolicy({});
    assert.equal(await h.exited, 3, `the holder exits 3:\n${h.out()}\n${h.err()}`);
    assert.match(h.out(), /"reason":"policy"/);
    await until("the session to be gone", async () =>
      (await a.listSessions({})).sessions.every((x) => x.identity?.uid !== 65534),
    );
    a.close();
    assertAlive(b);
    report("policy reload drops the uid", { reload: r, holderOut: h.out().trim().split("\n").pop() });
  });
});
