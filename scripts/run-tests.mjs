// Runs every compiled unit, property and end-to-end test with Node's built-in test runner.
// Tests live beside their code as src/**/*.test.ts (compiled to dist/) and in test/ for
// cross-package suites. Usage: node scripts/run-tests.mjs [substring filter...]
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const roots = [
  "native/dist",
  "proto/dist",
  "services/brokerd/dist",
  "services/admin/dist",
  "services/k8s/dist",
  "clients/node/dist",
  "test/dist",
];
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name !== "node_modules" && name !== "vm") walk(p);
    } else if (name.endsWith(".test.js")) files.push(p);
  }
}
for (const r of roots) if (existsSync(join(root, r))) walk(join(root, r));
const filters = process.argv.slice(2);
const selected = files.filter((f) => filters.length === 0 || filters.some((s) => f.includes(s))).sort();
if (selected.length === 0) {
  console.error("run-tests: no test files found; run `npm run build` first");
  process.exit(1);
}
console.log(`run-tests: ${selected.length} files\n  ${selected.map((f) => relative(root, f)).join("\n  ")}`);
const r = spawnSync(process.execPath, ["--test", "--test-reporter=spec", ...selected], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, VFIO_BROKER_REPO: root },
});
process.exit(r.status ?? 1);
