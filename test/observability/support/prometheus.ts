// Test support: a real Prometheus (Debian package `prometheus`) scraping one target, on a free
// loopback port with its TSDB in `dir`, started through a tiny node launcher that waits for
// /-/ready and prints {"event":"ready"} (what spawnReady waits for). Missing is a failure.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, type Proc, spawnReady } from "./processes.js";

const INSTALL = "install it: apt-get update && apt-get install -y --no-install-recommends prometheus";

export function requireTool(bin: string): void {
  const r = spawnSync(bin, ["--version"], { encoding: "utf8" });
  if (r.error || r.status !== 0)
    assert.fail(
      `${bin} is not installed (${r.error?.message ?? `exit ${r.status}`}); this test needs a real Prometheus: ${INSTALL}`,
    );
}

export interface Prometheus extends Proc {
  url: string;
  /** An instant query (now, or at a unix time in seconds); the result vector. */
  query(expr: string, at?: number): Promise<{ metric: Record<string, string>; value: [number, string] }[]>;
}

/** Prometheus scraping `target` (HOST:PORT) as job "vfio-broker" every `interval`. */
export async function startPrometheus(
  dir: string,
  target: string,
  interval = "1s",
  timeout = interval,
): Promise<Prometheus> {
  requireTool("prometheus");
  const promPort = await freePort();
  const url = `http://127.0.0.1:${promPort}`;
  const config = join(dir, "prometheus.yml");
  writeFileSync(
    config,
    [
      "global:",
      `  scrape_interval: ${interval}`,
      `  evaluation_interval: ${interval}`,
      "scrape_configs:",
      "  - job_name: vfio-broker",
      `    scrape_timeout: ${timeout}`,
      "    static_configs:",
      `      - targets: [${JSON.stringify(target)}]`,
      "",
    ].join("\n"),
  );
  const launcher = join(dir, "launch-prometheus.mjs");
  writeFileSync(
    launcher,
    `import { spawn } from "node:child_process";
const p = spawn("prometheus", ${JSON.stringify([
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, "tsdb")}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      "--log.level=warn",
    ])}, { stdio: ["ignore", "ignore", "inherit"] });
p.on("exit", (c, s) => { console.error("prometheus exited", c ?? s); process.exit(1); });
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => { p.kill("SIGTERM"); setTimeout(() => p.kill("SIGKILL"), 3000).unref(); p.on("exit", () => process.exit(0)); });
for (;;) {
  try { if ((await fetch("${url}/-/ready")).ok) break; } catch {}
  await new Promise((r) => setTimeout(r, 200));
}
console.log(JSON.stringify({ event: "ready" }));
`,
  );
  const proc = await spawnReady("prometheus", [launcher], {}, 60_000);
  return {
    ...proc,
    url,
    async query(expr, at) {
      const time = at === undefined ? "" : `&time=${at}`;
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}${time}`);
      const body = (await res.json()) as {
        status: string;
        data: { result: { metric: Record<string, string>; value: [number, string] }[] };
      };
      assert.equal(body.status, "success", `query ${expr} failed: ${JSON.stringify(body)}`);
      return body.data.result;
    },
  };
}
