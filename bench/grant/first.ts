// Benchmark (issue 12, goal 4): time to first mapping from a cold process: start, connect, Hello,
// OpenDevice, CreateMapping (grant), the fd, mmap, one write, exit, for the Node CLI and the
// Python client. Baselines from the same run: the bare start of the interpreter (`node -e 0`,
// `python3 -c 0`) and the C floor of one grant exchange (floor.c grant mode, p50).
// Usage: node bench/dist/grant/first.js [runs]   (default 10)
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runFloor } from "../fdpass/floor-run.js";
import { REPO, startBrokerd } from "../lib/brokerd.js";

const RUNS = Number(process.argv[2] ?? 10);

/** Median wall time of a command, ms (it must exit 0). */
function median(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): number {
  const ms: number[] = [];
  execFileSync(cmd, args, { env, stdio: "ignore" }); // warm the page cache
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    execFileSync(cmd, args, { env, stdio: "ignore" });
    ms.push(performance.now() - t0);
  }
  return ms.sort((a, b) => a - b)[ms.length >> 1]!;
}

const dir = mkdtempSync(join(tmpdir(), "vfio-broker-first-"));
const brokerd = await startBrokerd(dir);
try {
  const socket = join(dir, "broker.sock");
  const env = { ...process.env, VFIO_BROKER_SOCKET: socket };
  const floor = runFloor(10_000, "grant");
  const nodeStart = median(process.execPath, ["-e", "0"]);
  const cli = median(
    process.execPath,
    [
      join(REPO, "clients/node/dist/cli.js"),
      "map",
      "sim0",
      "BAR2",
      "--length",
      "4K",
      "--attr",
      "wc",
      "--write",
      "0=01020304",
    ],
    env,
  );
  const py = "/usr/bin/python3";
  const pyStart = median(py, ["-c", "0"]);
  const pyArgs = [
    join(REPO, "clients/python/vfio_broker_client.py"),
    "--socket",
    socket,
    "map",
    "sim0",
    "2",
    "--length",
    "4096",
    "--attr",
    "wc",
    "--write",
    "0=01020304",
  ];
  // With its generated stubs cached (every run after the first), and generating them (protoc) as
  // the first run of a user, or one without a private cache directory, does.
  const pyMap = median(py, pyArgs);
  const pyFirst = median(py, pyArgs, { ...process.env, VFIO_BROKER_PY_NO_CACHE: "1" });
  console.log(`time to first mapping from a cold process: median of ${RUNS} runs each`);
  console.log("| what | ms | over the interpreter's start |");
  console.log("|---|---|---|");
  console.log(`| C floor of one grant exchange (p50) | ${(floor.p50 / 1000).toFixed(3)} | |`);
  console.log(`| node -e 0 | ${nodeStart.toFixed(1)} | |`);
  console.log(
    `| Node CLI: vfio-broker map sim0 BAR2 --attr wc --write | ${cli.toFixed(1)} | +${(cli - nodeStart).toFixed(1)} ms |`,
  );
  console.log(`| python3 -c 0 | ${pyStart.toFixed(1)} | |`);
  console.log(
    `| Python client: map sim0 2 --attr wc --write (stubs cached) | ${pyMap.toFixed(1)} | +${(pyMap - pyStart).toFixed(1)} ms |`,
  );
  console.log(
    `| Python client, stubs generated (protoc: no cache yet) | ${pyFirst.toFixed(1)} | +${(pyFirst - pyStart).toFixed(1)} ms |`,
  );
  console.log(
    `goal 4 (time to first mapping): Node CLI ${cli.toFixed(1)} ms (${(cli / nodeStart).toFixed(2)}x node's own start), Python ${pyMap.toFixed(1)} ms with cached stubs (${(pyMap / pyStart).toFixed(2)}x python's start; ${pyFirst.toFixed(1)} ms generating them); C floor of the exchange ${(floor.p50 / 1000).toFixed(3)} ms`,
  );
} finally {
  brokerd.kill("SIGTERM");
  await new Promise((r) => brokerd.once("exit", r));
  rmSync(dir, { recursive: true, force: true });
}
