// Benchmark (issue 12, goal 3): what brokerd holds per idle session and per live mapping, and how
// fast it cleans up after a SIGKILLed client. brokerd runs as its own process (sim backend, state
// store and journal on). RSS is read from /proc/<pid>/status before and after; the per-item cost
// is the difference over the count (large counts, so allocator noise averages out).
//   - idle sessions: S raw connections on broker.sock (limited by this sandbox's RLIMIT_NOFILE:
//     each session is 2 fds in brokerd, socket + pidfd);
//   - live mappings: M mappings granted through the fast path and delivered (no fd left in brokerd);
//   - cleanup: SIGKILL of the client holding them (time to the journal's session.end), and of
//     clients holding one mapping each (p99 of the kill -> session.end latency).
// Usage: node bench/dist/scale/scale.js [sessions] [mappings]   (default 4000 100000)
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { closeFd, pidfdOpen, watchPidfd } from "@vfio-broker/native";
import { startBrokerd } from "../lib/brokerd.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const SESSIONS = Number(process.argv[2] ?? 4000);
const MAPPINGS = Number(process.argv[3] ?? 100_000);

const rssKiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function holder(
  socket: string,
  what: string,
  n: number,
): Promise<{ proc: ChildProcess; info: Record<string, number> }> {
  const proc = spawn(process.execPath, [join(HERE, "holder.js"), socket, what, String(n)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n")) resolve({ proc, info: JSON.parse(out.split("\n")[0]!) });
    });
    proc.once("exit", (c) => reject(new Error(`holder ${what} exited ${c}`)));
  });
}

/** Kill -> the journal's session.end for pid (ms, from journal timestamps), and brokerd's cleanupMs. */
async function killed(
  journal: string,
  proc: ChildProcess,
): Promise<{ latencyMs: number; cleanupMs: number; exitMs: number }> {
  const pid = proc.pid!;
  const text = readFileSync(journal, "utf8");
  const sessions = new Set(
    text
      .split("\n")
      .filter((l) => l.includes('"event":"session.open"') && l.includes(`"pid":${pid},`))
      .map((l) => (JSON.parse(l) as { session: string }).session),
  );
  // From here on only what brokerd appends is read (the journal holds 100,000s of lines by now,
  // and parsing all of it every 2 ms would delay this process's own pidfd watch below).
  const jfd = openSync(journal, "r");
  let pos = Buffer.byteLength(text);
  let tail = "";
  const ends: { session: string; ts: string; cleanupMs: number }[] = [];
  const readNew = () => {
    const buf = Buffer.alloc(1 << 20);
    for (;;) {
      const n = readSync(jfd, buf, 0, buf.length, pos);
      if (n <= 0) break;
      pos += n;
      tail += buf.subarray(0, n).toString();
    }
    const lines = tail.split("\n");
    tail = lines.pop()!;
    for (const l of lines)
      if (l.includes('"event":"session.end"')) {
        const e = JSON.parse(l) as { session: string; ts: string; cleanupMs: number };
        if (sessions.has(e.session)) ends.push(e);
      }
  };
  const t0 = Date.now();
  // The kernel's part, the baseline: until a pidfd of the process says it is gone, the very signal
  // brokerd waits for (watched here, in another process, at the same time).
  const pidfd = pidfdOpen(pid);
  const exited = new Promise<number>((resolve) => {
    const w = watchPidfd(pidfd, () => {
      resolve(Date.now() - t0);
      w.close();
      closeFd(pidfd);
    });
  });
  proc.kill("SIGKILL");
  for (;;) {
    readNew();
    if (ends.length >= sessions.size && sessions.size > 0) {
      closeSync(jfd);
      return {
        latencyMs: Math.max(...ends.map((e) => Date.parse(e.ts))) - t0,
        cleanupMs: Math.max(...ends.map((e) => e.cleanupMs)),
        exitMs: await exited,
      };
    }
    if (Date.now() - t0 > 60_000) throw new Error(`no session.end for pid ${pid}`);
    await sleep(2);
  }
}

const dir = mkdtempSync(join(tmpdir(), "vfio-broker-scale-"));
const brokerd = await startBrokerd(dir, {
  limits: "{ sessions: 100000, fdConnections: 1000, deviceFiles: 100000, mappings: 1000000, bytes: 16TiB }",
  args: ["--max-sessions", "100000", "--idle-timeout-ms", "3600000"],
});
const socket = join(dir, "broker.sock");
const journal = join(dir, "journal.jsonl");
try {
  await sleep(500);
  const base = rssKiB(brokerd.pid!);
  const s = await holder(socket, "sessions", SESSIONS);
  await sleep(1500);
  const withSessions = rssKiB(brokerd.pid!);
  const perSession = ((withSessions - base) * 1024) / SESSIONS;
  s.proc.kill("SIGKILL");
  await sleep(2000);
  const base2 = rssKiB(brokerd.pid!);
  const t0 = performance.now();
  const m = await holder(socket, "mappings", MAPPINGS);
  const grantS = (performance.now() - t0) / 1000;
  await sleep(1500);
  const withMappings = rssKiB(brokerd.pid!);
  const perMapping = ((withMappings - base2) * 1024) / MAPPINGS;
  const big = await killed(journal, m.proc);
  const k1000 = await killed(journal, (await holder(socket, "mappings", 1000)).proc);
  const small: number[] = [];
  const exits: number[] = [];
  const own: number[] = [];
  for (let i = 0; i < 40; i++) {
    const h = await holder(socket, "mappings", 1);
    await sleep(20);
    const k = await killed(journal, h.proc);
    small.push(k.latencyMs);
    exits.push(k.exitMs);
    own.push(k.cleanupMs);
  }
  for (const xs of [small, exits, own]) xs.sort((a, b) => a - b);
  console.log(`scale: brokerd RSS ${base} KiB at start, node ${process.version}`);
  console.log("| what | figure | goal | |");
  console.log("|---|---|---|---|");
  console.log(
    `| RSS per idle session (${SESSIONS} sessions) | ${perSession.toFixed(0)} B | 4096 B | ${perSession <= 4096 ? "met" : "missed"} |`,
  );
  console.log(
    `| RSS per live mapping (${MAPPINGS} mappings) | ${perMapping.toFixed(0)} B | 1024 B | ${perMapping <= 1024 ? "met" : "missed"} |`,
  );
  console.log(
    `| ${MAPPINGS} mappings granted (one client, fast path) | ${grantS.toFixed(1)} s (${m.info.grantsPerS}/s) | | |`,
  );
  console.log(
    `| SIGKILL of the client holding ${MAPPINGS}: kill -> session.end | ${big.latencyMs} ms (brokerd's cleanup ${big.cleanupMs.toFixed(1)} ms) | report | |`,
  );
  console.log(
    `| SIGKILL of a client holding 1000: kill -> session.end | ${k1000.latencyMs} ms (brokerd's cleanup ${k1000.cleanupMs.toFixed(1)} ms; the kernel's exit ${k1000.exitMs} ms) | report | |`,
  );
  const at = (xs: number[], q: number) => xs[Math.min(xs.length - 1, Math.floor(xs.length * q))]!;
  const p99 = at(small, 0.99);
  console.log(
    `| SIGKILL of a 1-mapping client: kill -> session.end p50 / p99 (40 kills, journal ms) | ${at(small, 0.5)} / ${p99} ms | p99 <= 5 ms | ${p99 <= 5 ? "met" : "missed"} |`,
  );
  console.log(
    `| baseline: kill -> a pidfd of the client says it exited (watched by this process), p50 / p99 | ${at(exits, 0.5)} / ${at(exits, 0.99)} ms | | |`,
  );
  console.log(
    `| brokerd's own cleanup of the session (session.end cleanupMs), p50 / p99 | ${at(own, 0.5).toFixed(2)} / ${at(own, 0.99).toFixed(2)} ms | | |`,
  );
  console.log(
    `goal 3 (memory): ${perSession.toFixed(0)} B/idle session (goal 4096), ${perMapping.toFixed(0)} B/mapping RSS (goal 1024); cleanup p99 ${p99} ms (goal 5), the kernel's exit (a pidfd watched by this process) p99 ${at(exits, 0.99)} ms, brokerd's own cleanup p99 ${at(own, 0.99).toFixed(2)} ms`,
  );
} finally {
  brokerd.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
