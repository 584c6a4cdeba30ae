// fdpass.ts: benchmark of the fd channel round trip through @vfio-broker/native, beside its C floor.
// One round trip = client sends a request frame -> server replies with a frame carrying a memfd
// (SCM_RIGHTS) -> client mmaps 4 KiB rw, writes a byte, munmaps, closes the fd. Node: two Node
// processes over an FdServer socket. Floor: floor.c (compiled here with cc -O2 into a temp dir), the
// same loop with blocking syscalls between two forked processes. Prints µs per round trip, round
// trips per second, and the Node/C ratio.
// Usage: node bench/dist/fdpass/fdpass.js [iterations=20000]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { closeFd, FdServer, FdSocket, memfdCreate, mmap } from "@vfio-broker/native";
import { runFloor } from "./floor-run.js";

const REQUEST = Buffer.from("map region=2\0\0\0\0");

async function serve(path: string): Promise<void> {
  const memfd = memfdCreate("bench-bar", 4096);
  const reply = Buffer.from("cookie=4096 len=4096\0\0\0\0");
  const server = FdServer.listen(path);
  server.onConnection(async (sock) => {
    server.close();
    for (;;) {
      const req = await sock.recv();
      if (req === null) break;
      await sock.send(reply, [memfd]);
    }
    sock.close();
    const check = mmap(memfd, 0, 4096, "r");
    const touched = new Uint8Array(check.buffer).some((b) => b !== 0);
    check.unmap();
    if (!touched) throw new Error("the client's writes never reached the memfd");
  });
  process.stdout.write("listening\n");
}

async function client(path: string, n: number): Promise<number> {
  const sock = await FdSocket.connect(path);
  const warm = Math.floor(n / 10) + 100;
  let t0 = 0n;
  for (let i = -warm; i < n; i++) {
    if (i === 0) t0 = process.hrtime.bigint();
    await sock.send(REQUEST);
    const reply = await sock.recv();
    const fd = reply!.fds[0]!;
    const map = mmap(fd, 0, 4096, "rw");
    new Uint8Array(map.buffer)[i & 4095] = i & 0xff;
    map.unmap();
    closeFd(fd);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  sock.close();
  return seconds;
}

async function main(): Promise<void> {
  if (process.argv[2] === "--server") {
    await serve(process.argv[3]!);
    return;
  }
  const n = Number(process.argv[2] ?? 20000);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`iterations must be a positive integer, got ${process.argv[2]}`);
  const dir = mkdtempSync(join(tmpdir(), "bench-fdpass-"));
  try {
    const path = join(dir, "fd.sock");
    const server = spawn(process.execPath, [fileURLToPath(import.meta.url), "--server", path], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      server.stdout.once("data", () => resolve());
      server.once("exit", (code) => reject(new Error(`server exited early (${code})`)));
    });
    const nodeSeconds = await client(path, n);
    const serverCode = await new Promise<number | null>((resolve) => server.once("exit", resolve));
    if (serverCode !== 0) throw new Error(`the Node server failed (exit ${serverCode})`);

    const cSeconds = runFloor(n, "fdpass").seconds;

    const row = (name: string, s: number): string =>
      `| ${name.padEnd(28)} | ${((s / n) * 1e6).toFixed(2).padStart(9)} | ${Math.round(n / s)
        .toString()
        .padStart(13)} |`;
    console.log(
      `fdpass: request + fd pass + mmap 4 KiB + write + munmap + close, ${n} round trips (after warm-up)`,
    );
    console.log(
      `| ${"implementation".padEnd(28)} | ${"µs / rt".padStart(9)} | ${"round trips/s".padStart(13)} |`,
    );
    console.log(`|${"-".repeat(30)}|${"-".repeat(10)}:|${"-".repeat(14)}:|`);
    console.log(row("Node (@vfio-broker/native)", nodeSeconds));
    console.log(row("C floor (floor.c, -O2)", cSeconds));
    console.log(`ratio Node/C: ${(nodeSeconds / cSeconds).toFixed(2)}x`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
