// handover-taker.ts: test helper, spawned by handover.test.ts as a taker in its own process (often
// as uid 65534). Modes: "takeOver" runs the real takeOver and reports its result; "raw" speaks the
// protocol by hand and reports the first frame it gets; "die" sends take, waits for the first fds
// frame and SIGKILLs itself mid-transfer. One JSON line on stdout.
import { FdSocket } from "@vfio-broker/native";
import { takeOver } from "../handover.js";

const [mode, path] = process.argv.slice(2) as [string, string];
const say = (v: unknown): void => void process.stdout.write(`${JSON.stringify(v)}\n`);
if (mode === "takeOver") {
  try {
    const t = await takeOver(path, 5000);
    say({ ok: true, fds: t.fds.length });
  } catch (err) {
    say({ ok: false, code: (err as { code?: string }).code, message: (err as Error).message });
  }
} else {
  const sock = await FdSocket.connect(path);
  // A refused peer may find the socket closed already (EPIPE): the refusal frame is still there.
  await sock.send(Buffer.from(JSON.stringify({ op: "take", version: 1, pid: process.pid }))).catch(() => {});
  const m = await sock.recv({ maxBytes: 1 << 24, maxFds: 253 });
  if (mode === "die") {
    say({ got: m?.fds.length });
    process.kill(process.pid, "SIGKILL");
  }
  say({ frame: m && JSON.parse(m.data.toString()), fds: m?.fds.length });
  sock.close();
}
