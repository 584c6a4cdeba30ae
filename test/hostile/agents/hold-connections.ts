// Attacker agent: holds COUNT idle connections on a Unix socket, or on TCP with "tcp:HOST:PORT"
// (never says a word), reopening each one brokerd closes, until SIGTERM or MS pass. Prints
// {opened, closedByBroker, heldAtEnd}.
import { connect, type Socket } from "node:net";

const [socket, countArg = "1024", msArg = "600000"] = process.argv.slice(2);
const end = Date.now() + Number(msArg);
let opened = 0;
let closedByBroker = 0;
let stopping = false;
const live = new Set<Socket>();

function open(): void {
  if (stopping || Date.now() > end) return;
  const tcp = /^tcp:(.+):(\d+)$/.exec(socket!);
  const c = tcp ? connect(Number(tcp[2]), tcp[1]!) : connect(socket!);
  opened++;
  live.add(c);
  c.on("error", () => {});
  c.on("data", () => {}); // read whatever brokerd says, so only idleness is tested
  c.on("close", () => {
    live.delete(c);
    if (stopping) return;
    closedByBroker++;
    setTimeout(open, 20);
  });
}

for (let i = 0; i < Number(countArg); i++) open();
await new Promise<void>((resolve) => {
  process.on("SIGTERM", () => resolve());
  setTimeout(resolve, Math.max(0, end - Date.now())).unref();
});
stopping = true;
const heldAtEnd = live.size;
for (const c of live) c.destroy();
process.stdout.write(`${JSON.stringify({ opened, closedByBroker, heldAtEnd })}\n`);
process.exit(0);
