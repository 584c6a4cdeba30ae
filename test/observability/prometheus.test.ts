// A real Prometheus (Debian package `prometheus`) scrapes a real brokerd every second. The test
// creates a WC mapping of sim0 BAR2 and waits until Prometheus has the live-mapping series with
// the right labels and value 1; `promtool check metrics` must accept brokerd's exposition, and
// the shipped deploy/prometheus config and rules and deploy/grafana dashboard must check out
// against what brokerd really exports. Prometheus missing is a failure, never a skip.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Brokerd, freePort, poll, REPO, startBrokerd, tempDir } from "./support/processes.js";
import { type Prometheus, requireTool, startPrometheus } from "./support/prometheus.js";
import { RawClient } from "./support/raw-client.js";

const tmp = tempDir("vfio-obs-");
let brokerd: Brokerd | undefined;
let prometheus: Prometheus | undefined;
let client: RawClient | undefined;
let metricsUrl = "";

before(async () => {
  requireTool("prometheus");
  requireTool("promtool");
  const metricsPort = await freePort();
  metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  brokerd = await startBrokerd(tmp.path, { metrics: `127.0.0.1:${metricsPort}` });

  prometheus = await startPrometheus(tmp.path, `127.0.0.1:${metricsPort}`);
});

after(async () => {
  client?.close();
  await prometheus?.stop();
  await brokerd?.stop();
  tmp.remove();
});

const query = (expr: string) => prometheus!.query(expr);

test("Prometheus scrapes brokerd and sees a live WC mapping of sim0 BAR2", async () => {
  await poll("Prometheus to scrape brokerd (up == 1)", async () => {
    const r = await query('up{job="vfio-broker"}');
    return r[0]?.value[1] === "1" ? true : undefined;
  });
  client = await RawClient.connect(brokerd!.socket, brokerd!.fdSocket);
  const m = await client.map("sim0", "BAR2", 4096n, "wc");
  assert.ok(m.cookie >= 0n);

  const series = await poll(
    "vfio_broker_mappings_live{device=sim0,region=BAR2,attribute=WC} == 1 in Prometheus",
    async () => {
      const r = await query('vfio_broker_mappings_live{device="sim0",region="BAR2",attribute="WC"}');
      return r[0]?.value[1] === "1" ? r[0] : undefined;
    },
  );
  assert.equal(series.metric.job, "vfio-broker");

  // The event counters saw the same grant and delivery.
  const grants = await poll("the grant counter", async () => {
    const r = await query(
      'vfio_broker_mapping_grants_total{device="sim0",region="BAR2",attribute="WC",result="exact"}',
    );
    return r[0]?.value[1] === "1" ? r : undefined;
  });
  assert.equal(grants.length, 1);
  await poll("an ok fd delivery", async () => {
    const r = await query('vfio_broker_fd_deliveries_total{result="ok"}');
    return r[0]?.value[1] === "1" ? r : undefined;
  });
  await poll("sessions == 1 and one DeviceFile on sim0 with its MapleTree entries", async () => {
    const [s, f, e] = await Promise.all([
      query("vfio_broker_sessions"),
      query('vfio_broker_device_files_open{device="sim0"}'),
      query('vfio_broker_maple_tree_entries{device="sim0"}'),
    ]);
    return s[0]?.value[1] === "1" && f[0]?.value[1] === "1" && Number(e[0]?.value[1]) >= 2 ? true : undefined;
  });
});

test("promtool check metrics accepts brokerd's exposition, with no unbounded labels", async () => {
  const text = await (await fetch(metricsUrl)).text();
  const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  assert.equal(r.status, 0, `promtool check metrics failed:\n${r.stdout}${r.stderr}`);
  assert.equal(`${r.stdout}${r.stderr}`.trim(), "", "promtool reported lint problems");
  // Labels never carry cookies, pids, uids or session ids.
  const session = client!.sessionId;
  assert.ok(!text.includes(session), "a session id appears in the metrics");
  for (const line of text.split("\n").filter((l) => l.startsWith("vfio_broker_"))) {
    const labels = line.slice(line.indexOf("{") + 1, line.lastIndexOf("}"));
    assert.doesNotMatch(labels, /\b(cookie|pid|uid|gid|session|ticket)=/, line);
  }
  for (const name of [
    "vfio_broker_sessions",
    "vfio_broker_device_files_open",
    "vfio_broker_mappings_live",
    "vfio_broker_mapping_grants_total",
    "vfio_broker_mapping_releases_total",
    "vfio_broker_create_mapping_duration_seconds",
    "vfio_broker_fd_delivery_duration_seconds",
    "vfio_broker_fd_deliveries_total",
    "vfio_broker_tickets_expired_total",
    "vfio_broker_tickets_held",
    "vfio_broker_tickets_refused_total",
    "vfio_broker_policy_denials_total",
    "vfio_broker_revocations_total",
    "vfio_broker_lease_cleanup_duration_seconds",
    "vfio_broker_device_health",
    "vfio_broker_maple_tree_entries",
    "vfio_broker_maple_tree_max_depth",
    "process_cpu_seconds_total",
  ])
    assert.match(text, new RegExp(`^# TYPE ${name} `, "m"), `${name} is missing`);
});

test("deploy/prometheus config and rules pass promtool; the Grafana dashboard only uses exported metrics", async () => {
  const cfg = spawnSync("promtool", ["check", "config", join(REPO, "deploy/prometheus/prometheus.yml")], {
    encoding: "utf8",
  });
  assert.equal(cfg.status, 0, `promtool check config:\n${cfg.stdout}${cfg.stderr}`);
  const rules = spawnSync("promtool", ["check", "rules", join(REPO, "deploy/prometheus/rules.yml")], {
    encoding: "utf8",
  });
  assert.equal(rules.status, 0, `promtool check rules:\n${rules.stdout}${rules.stderr}`);

  const text = await (await fetch(metricsUrl)).text();
  const exported = new Set(
    [...text.matchAll(/^# TYPE (\S+) (\S+)/gm)].flatMap((m) => {
      const base = m[1]!;
      return m[2] === "histogram" ? [`${base}_bucket`, `${base}_sum`, `${base}_count`] : [base];
    }),
  );
  const dashboard = JSON.parse(readFileSync(join(REPO, "deploy/grafana/vfio-broker.json"), "utf8")) as {
    panels: { title: string; targets?: { expr: string }[] }[];
  };
  assert.ok(dashboard.panels.length >= 8, "the dashboard has its panels");
  for (const panel of dashboard.panels)
    for (const t of panel.targets ?? [])
      for (const name of t.expr.match(/\b(vfio_broker_[a-z_]+|process_[a-z_]+|nodejs_[a-z_]+)\b/g) ?? [])
        assert.ok(exported.has(name), `panel "${panel.title}" uses ${name}, which brokerd does not export`);
  // Every dashboard query is valid PromQL: Prometheus evaluates it without error.
  for (const panel of dashboard.panels)
    for (const t of panel.targets ?? []) {
      const expr = t.expr
        .replaceAll("$__rate_interval", "1m")
        .replaceAll("$device", ".*")
        .replaceAll("$job", "vfio-broker");
      await query(expr);
    }
});
