// fdstore-child.ts: test helper, exec'd by fdstore.test.ts's fake systemd as "the next brokerd" with
// the stored fds at 3.. and LISTEN_* set. It takes them back, reads the memfd, serves on the
// inherited listening socket (a client queued before it started is answered too) and reports one
// JSON line on stdout.
import { readFileSync, readSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { takeListenFds } from "../fdstore.js";

const socketPath = process.argv[2]!;
const seen = {
  LISTEN_PID: process.env.LISTEN_PID,
  LISTEN_FDS: process.env.LISTEN_FDS,
  LISTEN_FDNAMES: process.env.LISTEN_FDNAMES,
};
const fdinfoFlags = (fd: number): number =>
  Number.parseInt(/^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))![1]!, 8);
const fds = takeListenFds();
const left = [process.env.LISTEN_PID, process.env.LISTEN_FDS, process.env.LISTEN_FDNAMES];
const again = takeListenFds();
const cloexec = fds.map((f) => (fdinfoFlags(f.fd) & 0o2000000) !== 0);
const byName = (name: string): number[] => fds.filter((f) => f.name === name).map((f) => f.fd);

const buf = Buffer.alloc(32);
const n = readSync(byName("bar0")[0]!, buf, 0, buf.length, 0);

const server = createServer((c) => c.end(`served by ${process.pid}`));
await new Promise<void>((resolve) => server.listen({ fd: byName("listener")[0]! }, resolve));
const answer = await new Promise<string>((resolve, reject) => {
  let s = "";
  createConnection(socketPath)
    .setEncoding("utf8")
    .on("data", (d) => {
      s += d;
    })
    .on("end", () => resolve(s))
    .on("error", reject);
});
// net.Server owns the fd now: close() closes it (and, listening by fd, leaves the path alone).
// Serve a little longer for the client the parent queued before this process existed.
await new Promise((r) => setTimeout(r, 200));
server.close();
process.stdout.write(
  `${JSON.stringify({
    child: {
      pid: process.pid,
      seen,
      left,
      again,
      cloexec,
      names: fds.map((f) => f.name),
      fds: fds.map((f) => f.fd),
      bar0: buf.subarray(0, n).toString(),
      answer,
    },
  })}\n`,
);
