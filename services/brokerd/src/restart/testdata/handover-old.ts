// handover-old.ts: test helper, spawned by handover.test.ts as "the old brokerd". It owns a BAR
// memfd, a listening socket it serves ("old <pid>") through net.Server on a dup, and `extra` more
// memfds, and offers them at argv[2]. collect() stops accepting (closing the dup leaves the
// listener and its backlog alive) and, with holdCollect, waits for "go" on stdin; abort() serves
// again. Every step is one JSON line on stdout.
import { closeSync, fstatSync, readSync, writeSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { dupFd, listenUnix, memfdCreate } from "@vfio-broker/native";
import type { NamedFd } from "../fdstore.js";
import { offerHandover } from "../handover.js";

const [handoverPath, listenPath, configJson] = process.argv.slice(2) as [string, string, string];
const config = JSON.parse(configJson) as {
  extra?: number;
  holdCollect?: boolean;
  exitInDone?: boolean;
  failDone?: boolean;
};
const emit = (event: string, data: Record<string, unknown> = {}): void => {
  process.stdout.write(`${JSON.stringify({ event, ...data })}\n`);
};
const readBar = (fd: number): string => {
  const b = Buffer.alloc(16);
  return b
    .subarray(0, readSync(fd, b, 0, 16, 0))
    .toString()
    .replace(/\0+$/, "");
};

const bar = memfdCreate("bar0", 4096);
writeSync(bar, Buffer.from("old bytes"), 0, 9, 0);
const listener = listenUnix(listenPath);
const fds: NamedFd[] = [
  { name: "bar0", fd: bar },
  { name: "listener", fd: listener },
];
for (let i = 0; i < (config.extra ?? 0); i++)
  fds.push({ name: `extra-${i}`, fd: memfdCreate(`extra-${i}`, 0) });

let server: Server | null = null;
const serve = (): Promise<void> =>
  new Promise((resolve) => {
    server = createServer((c) => c.on("error", () => {}).end(`old ${process.pid}`));
    server.listen({ fd: dupFd(listener) }, resolve);
  });
await serve();

let go: Promise<void> = Promise.resolve();
if (config.holdCollect) {
  go = new Promise((resolve) => {
    process.stdin.setEncoding("utf8").on("data", (d: string) => {
      if (d.includes("go")) resolve();
    });
  });
}

offerHandover(handoverPath, {
  async collect() {
    await new Promise((resolve) => server!.close(resolve));
    server = null;
    emit("frozen");
    await go;
    if (config.holdCollect) process.stdin.destroy();
    return { fds, meta: { from: "old", pid: process.pid } };
  },
  done() {
    emit("done", { bar0: readBar(bar) });
    if (config.failDone) throw new Error("done failed on purpose");
    if (config.exitInDone) process.exit(0);
  },
  async abort(reason) {
    let open = 0;
    for (const f of fds) {
      try {
        fstatSync(f.fd);
        open++;
      } catch {
        // closed: counted as lost
      }
    }
    await serve();
    emit("aborted", { reason: reason.message, open, total: fds.length, bar0: readBar(bar) });
  },
  refused(reason, peer) {
    emit("refused", { reason, uid: peer.uid });
  },
});
emit("ready", {
  pid: process.pid,
  files: fds.map((f) => {
    const st = fstatSync(f.fd);
    return { name: f.name, dev: st.dev, ino: st.ino };
  }),
});
process.on("SIGTERM", () => {
  closeSync(bar);
  process.exit(0);
});
