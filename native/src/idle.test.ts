// idle.test.ts: thousands of FdSockets cost no threadpool threads and never keep a process alive.
// A child (started with RLIMIT_NOFILE raised where allowed) opens up to 10,000 pairs, checks that
// fs.readFile still completes while every one of them waits in recv(), and must then exit by itself
// with all sockets (and an unref'd pidfd watch) still open.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

test("10,000 idle socket pairs: threadpool free, and the process exits by itself", {
  timeout: 120_000,
}, async () => {
  const script = fileURLToPath(new URL("./testdata/idle-child.js", import.meta.url));
  // Root may raise the hard limit; otherwise the child sizes itself to what ulimit allows.
  const child = spawn(
    "sh",
    [
      "-c",
      'ulimit -n 40000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$1" 10000',
      process.execPath,
      script,
    ],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let out = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (d: string) => {
    out += d;
  });
  const started = Date.now();
  const code = await new Promise<number | null>((resolve) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("exit", (c) => {
      clearTimeout(kill);
      resolve(c);
    });
  });
  assert.equal(code, 0, `the child must exit by itself (took ${Date.now() - started} ms); output: ${out}`);
  const r = JSON.parse(out) as { pairs: number; readFileMs: number; delivered: number };
  assert.ok(r.pairs >= 2000, `at least 2,000 pairs (got ${r.pairs})`);
  assert.equal(r.delivered, r.pairs);
  assert.ok(
    r.readFileMs < 2000,
    `16 fs.readFile calls took ${r.readFileMs} ms while ${r.pairs} recv()s waited`,
  );
});
