// idle-child.ts: test helper for idle.test.ts. Opens as many FdSocket pairs as RLIMIT_NOFILE allows
// (up to 10,000), does one round trip on each (so every socket has had a poller), then shows that
// while all of them wait in recv() the libuv threadpool is still free (fs.readFile x16 completes
// promptly), answers all of them, watches its parent's pidfd, and returns: the process must then exit
// by itself with every socket still open.
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { FdSocket, pidfdOpen, watchPidfd } from "../index.js";

const limits = readFileSync("/proc/self/limits", "utf8");
const soft = Number(/Max open files\s+(\d+)/.exec(limits)?.[1] ?? 1024);
const want = Number(process.argv[2] ?? 10_000);
const n = Math.max(1, Math.min(want, Math.floor((soft - 256) / 2)));
const pairs: [FdSocket, FdSocket][] = [];
for (let i = 0; i < n; i++) pairs.push(FdSocket.pair());
const ping = Buffer.from("ping");
await Promise.all(
  pairs.map(async ([a, b]) => {
    await a.send(ping);
    await b.recv();
  }),
);
const pending = pairs.map(([, b]) => b.recv());
const t0 = performance.now();
await Promise.all(Array.from({ length: 16 }, () => readFile("/proc/self/status")));
const readFileMs = performance.now() - t0;
for (const [a] of pairs) await a.send(ping);
const got = await Promise.all(pending);
watchPidfd(pidfdOpen(process.ppid), () => {});
process.stdout.write(
  `${JSON.stringify({ pairs: n, readFileMs, delivered: got.filter((m) => m !== null).length })}\n`,
);
