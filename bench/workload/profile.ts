// Where brokerd's CPU per grant goes (issue 20, item 4): brokerd under `node --cpu-prof` while a C
// driver of bench/workload grants (one session timed grant by grant, or the 64-session load), then
// its profile summarized by function: self and inclusive shares of brokerd's busy time. It owns
// this one run; the figures with their floors are bench/workload/workload.ts's.
// Usage: node bench/dist/workload/profile.js [latency|tput] [grants|seconds] [raw]
//        (default latency 20000; raw: the raw-frame driver even when libvfio-broker is built)
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO, startBrokerd } from "../lib/brokerd.js";
import { summarize } from "../lib/cpu-profile.js";

const MODE = process.argv[2] === "tput" ? "tput" : "latency";
const AMOUNT = Number(process.argv[3] ?? (MODE === "tput" ? 5 : 20000));
const W = join(REPO, "bench/workload");
execFileSync("make", ["-s", "-C", W], { stdio: "inherit" });
let bin = "driver-raw";
if (process.argv[4] !== "raw") {
  try {
    execFileSync("make", ["-s", "-C", W, "lib"], { stdio: "ignore" });
    bin = "driver-lib";
  } catch {
    // the library is not built in this tree: the raw-frame driver
  }
}

const dir = mkdtempSync(join(tmpdir(), "vfio-broker-prof-"));
const prof = join(dir, "prof");
mkdirSync(prof);
const run = join(dir, "b");
mkdirSync(run);
try {
  const bd = await startBrokerd(run, {
    node: ["--cpu-prof", `--cpu-prof-dir=${prof}`],
    limits: "{ sessions: 256, fdConnections: 256, deviceFiles: 256, pendingMappings: 512, mappings: 8192 }",
    args: ["--max-sessions", "256", "--max-fd-connections", "256", "--tenant-reserve", "0"],
  });
  const sock = join(run, bin === "driver-lib" ? "broker.sock" : "fd.sock");
  const args =
    MODE === "tput"
      ? ["tput", sock, "16", "4", String(AMOUNT), String(bd.pid)]
      : ["latency", sock, String(AMOUNT), String(bd.pid)];
  const out = execFileSync(join(W, "build", bin), args, { encoding: "utf8", input: "go\n" });
  const r = JSON.parse(out.trim().split("\n").pop()!) as {
    serverCpuUs?: number;
    serverCpuS?: number;
    grants?: number;
  };
  const cpuUs = r.serverCpuUs ?? ((r.serverCpuS ?? 0) * 1e6) / (r.grants ?? 1);
  bd.kill("SIGTERM"); // brokerd drains and exits; node writes the profile then
  await new Promise((resolve) => bd.once("exit", resolve));
  const file = readdirSync(prof).find((f) => f.endsWith(".cpuprofile"));
  if (!file) throw new Error("brokerd wrote no CPU profile");
  const { busy, rows } = summarize(join(prof, file));
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  console.log(
    `brokerd CPU profile, ${bin} ${MODE} ${AMOUNT}: ${cpuUs.toFixed(1)} µs of brokerd CPU per grant (/proc/<pid>/stat, the profiler running: workload.js gives it without); busy ${pct(busy)} of the profile`,
  );
  console.log("\n| function (inclusive, share of busy time) | inclusive | self |");
  console.log("|---|---|---|");
  for (const x of rows.slice(0, 30)) console.log(`| ${x.what} | ${pct(x.inclusive)} | ${pct(x.self)} |`);
  console.log("\n| function (self, share of busy time) | self |");
  console.log("|---|---|");
  for (const x of [...rows].sort((a, b) => b.self - a.self).slice(0, 20))
    console.log(`| ${x.what} | ${pct(x.self)} |`);
} finally {
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
}
