// /metrics listens on loopback TCP, which any local user can reach. Each connection is an fd in
// brokerd, so a user holding thousands of them must not eat the fds brokerd's clients and
// operators need: the listener keeps at most 128 connections and closes silent ones after 10 s.
// Nor may that user blind Prometheus: each connection is admitted under its peer's uid (read
// from /proc/net/tcp), at most 4 per uid, so a scraper of another uid always finds a slot.
// The admin socket (the operator's way in) and the broker socket keep serving throughout.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import { tempDir } from "../observability/support/processes.js";
import { startPrometheus } from "../observability/support/prometheus.js";
import { freePort } from "./journal-support.js";
import { attacker, observe, report, suiteBrokerd } from "./support/harness.js";

const port = await freePort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("hostile: the metrics listener", () => {
  const suite = suiteBrokerd({ args: ["--metrics", `127.0.0.1:${port}`] });

  it("1024 idle TCP connections to /metrics: brokerd's fds stay bounded, clients, operators and scrapes get in", {
    timeout: 120_000,
  }, async () => {
    const { b, baseline } = suite;
    const watching = observe(b);
    const a = attacker("hold-connections", [`tcp:127.0.0.1:${port}`, "1024", "6000"]);
    await sleep(1000);
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
      await sleep(150);
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
      peak.maxFds <= baseline + 128 + 16 + 40,
      `brokerd held up to ${peak.maxFds} fds (baseline ${baseline})`,
    );
    assert.equal(adminOk, 20, "the admin socket answered every time");
    assert.ok(scraped >= 17, `only ${scraped}/${scrapes} scrapes (as root) got through`);
    assert.ok(victim.ok / victim.attempts >= 0.99, JSON.stringify(victim));
  });

  // deploy/prometheus/prometheus.yml's interval and timeout, Prometheus started while the attack
  // is already in place (a restart, or a connection dropped): it has to win a slot from scratch.
  it("a real Prometheus (every 5 s, as shipped) started during 1000 idle connections of uid 65534: >= 7 of 8 scrapes", {
    timeout: 180_000,
  }, async () => {
    const tmp = tempDir("vfio-hostile-prom-");
    const a = attacker("hold-connections", [`tcp:127.0.0.1:${port}`, "1000", "90000"]);
    await sleep(3000); // the attack in place: every slot it can take, taken
    const prom = await startPrometheus(tmp.path, `127.0.0.1:${port}`, "5s", "4s");
    try {
      await sleep(41_000);
      const at = Math.floor(Date.now() / 1000);
      const window = "40s";
      const [total, up] = await Promise.all([
        prom.query(`count_over_time(up{job="vfio-broker"}[${window}])`, at),
        prom.query(`sum_over_time(up{job="vfio-broker"}[${window}])`, at),
      ]);
      a.kill("SIGTERM");
      const r = (await a.result()) as { opened: number; closedByBroker: number; heldAtEnd: number };
      const scrapes = Number(total[0]?.value[1] ?? 0);
      const succeeded = Number(up[0]?.value[1] ?? 0);
      report("metrics: Prometheus during 1000 idle connections", { attacker: r, window, scrapes, succeeded });
      assert.ok(scrapes >= 7, `Prometheus made only ${scrapes} scrapes in ${window}`);
      assert.ok(succeeded / scrapes >= 7 / 8, `Prometheus scraped ${succeeded}/${scrapes} during the attack`);
    } finally {
      a.kill("SIGTERM");
      await prom.stop();
      tmp.remove();
    }
  });
});
