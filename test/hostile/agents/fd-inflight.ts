// Attacker agent for the in-flight fd limit (issue 18 row 13): a process of brokerd's own uid
// (root) that holds COUNT fds in flight on Unix socketpairs nobody reads. It sends one fd (of
// /dev/null) 253 times per message (SCM_MAX_FD), each message one byte, until the kernel counts
// COUNT in flight for its user; a pair whose send buffer is full is left as it is and a new one
// made. The kernel counts these for the sending user (uid 0 here) and compares the count with the
// RLIMIT_NOFILE of every later sender of that uid. Prints {"phase":"holding","inflight":N}, holds
// until SIGTERM (or 120 s), then exits, which frees them all (nothing is left behind).
import { closeSync, openSync } from "node:fs";
import { FdSocket, MAX_FDS_PER_MESSAGE } from "@vfio-broker/native";

const target = Number(process.argv[2] ?? "30000");
const fd = openSync("/dev/null", "r");
const fds = new Array<number>(MAX_FDS_PER_MESSAGE).fill(fd);
const pairs: FdSocket[] = [];
let inflight = 0;
let messages = 0;
/** true if the send completed at once (the kernel took the message), false if it had to queue. */
async function sentNow(p: Promise<void>): Promise<boolean> {
  p.catch(() => {});
  return Promise.race([p.then(() => true), new Promise<boolean>((r) => setImmediate(() => r(false)))]);
}
const byte = Buffer.from([0]);
while (inflight < target && pairs.length < 4096) {
  const [a, b] = FdSocket.pair();
  pairs.push(a, b);
  for (;;) {
    const n = Math.min(MAX_FDS_PER_MESSAGE, target - inflight);
    if (!(await sentNow(a.send(byte, fds.slice(0, n))))) break;
    inflight += n;
    messages++;
    if (inflight >= target) break;
  }
}
closeSync(fd);
process.stdout.write(
  `${JSON.stringify({ phase: "holding", inflight, messages, pairs: pairs.length / 2 })}\n`,
);
const end = () => {
  for (const s of pairs) s.close();
  process.stdout.write(`${JSON.stringify({ inflight, messages })}\n`);
  process.exit(0);
};
process.on("SIGTERM", end);
setTimeout(end, 120_000);
