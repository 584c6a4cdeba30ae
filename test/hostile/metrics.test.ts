// /metrics listens on loopback TCP, which any local user can reach. Each connection is an fd in
// brokerd, so a user holding thousands of them must not eat the fds brokerd's clients and
// operators need: the listener keeps at most 128 connections and closes silent ones after 10 s.
// The admin socket (the operator's way in) and the broker socket keep serving throughout.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import { freePort } from "./journal-support.js";
import { attacker, observe, report, suiteBrokerd } from "./support/harness.js";

const port = await freePort();

describe("hostile: the metrics listener", () => {
  const suite = suiteBrokerd({ args: ["--metrics", `127.0.0.1:${port}`] });

  it("1024 idle TCP connections to /metrics: brokerd's fds stay bounded, clients and operators get in", {
    timeout: 120_000,
  }, async () => {
    const { b, baseline } = suite;
    const watching = observe(b);
    const a = attacker("hold-connections", [`tcp:127.0.0.1:${port}`, "1024", "6000"]);
    await new Promise((r) => setTimeout(r, 1000));
    let scrapes = 0;
    let scraped = 0;
    let adminOk = 0;
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    for (let i = 0; i < 20; i++) {
      scrapes++;
      try {
        const r = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) });
        if (r.ok && (await r.text()).includes("vfio_broker_sessions")) scraped++;
      } catch {
        /* counted */
      }
      await admin.getHealth({}, { timeoutMs: 2000 }).then(
        () => adminOk++,
        () => {},
      );
      await new Promise((r) => setTimeout(r, 150));
    }
    admin.close();
    const r = (await a.result()) as { opened: number; closedByBroker: number; heldAtEnd: number };
    const { victim, peak } = await watching.stop();
    report("metrics idle connections", {
      attacker: r,
      scrapes,
      scraped,
      adminOk,
      victim,
      baselineFds: baseline,
      brokerdPeak: peak,
    });
    assert.ok(
      peak.maxFds <= baseline + 128 + 40,
      `brokerd held up to ${peak.maxFds} fds (baseline ${baseline})`,
    );
    assert.equal(adminOk, 20, "the admin socket answered every time");
    assert.ok(victim.ok / victim.attempts >= 0.99, JSON.stringify(victim));
  });
});
