// identity.test.ts: two processes, the peer unprivileged (uid 65534): they share a memfd and each
// sees the other's writes; the kernel's view of the peer (SO_PEERCRED, SO_PEERPIDFD, or the labelled
// pidfd_open fallback) beats the pid the peer claims; watchPidfd fires when the peer is SIGKILLed;
// watchOwnPidfd does too, on the caller's pidfd itself (no fd of its own), one watch per pidfd.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  closeFd,
  FdServer,
  type FdSocket,
  memfdCreate,
  mmap,
  peerCred,
  peerPidfd,
  pidfdAlive,
  pidfdOpen,
  watchOwnPidfd,
  watchPidfd,
} from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "vfio-native-id-"));
chmodSync(dir, 0o755);
after(() => rmSync(dir, { recursive: true, force: true }));
const isRoot = process.getuid?.() === 0;
const [major = 0, minor = 0] = release().split(".").map(Number);
const kernelHasPeerPidfd = major > 6 || (major === 6 && minor >= 5);

async function exchange(forceFallback: boolean): Promise<void> {
  const path = join(dir, `peer-${forceFallback ? "fallback" : "pidfd"}.sock`);
  const server = FdServer.listen(path, { mode: 0o666 });
  const accepted = new Promise<FdSocket>((resolve) => server.onConnection(resolve));
  const script = fileURLToPath(new URL("./testdata/peer-child.js", import.meta.url));
  const child = spawn(process.execPath, [script, path], {
    uid: 65534,
    gid: 65534,
    stdio: ["ignore", "inherit", "inherit"],
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) =>
    child.on("exit", (_code, signal) => resolve(signal)),
  );
  try {
    const sock = await accepted;
    const hello = JSON.parse((await sock.recv())!.data.toString()) as { pid: number; uid: number };
    assert.equal(hello.pid, 1, "the child claims to be pid 1");
    assert.deepEqual(peerCred(sock.fd), { pid: child.pid, uid: 65534, gid: 65534 });
    if (forceFallback) process.env.VFIO_NATIVE_NO_PEERPIDFD = "1";
    let id: ReturnType<FdSocket["peerIdentity"]>;
    try {
      id = sock.peerIdentity();
      if (forceFallback) assert.equal(peerPidfd(sock.fd), null);
    } finally {
      delete process.env.VFIO_NATIVE_NO_PEERPIDFD;
    }
    assert.equal(id.pid, child.pid);
    assert.equal(id.uid, 65534);
    assert.equal(id.gid, 65534);
    if (forceFallback) assert.equal(id.pidfdSource, "pidfd_open");
    else if (kernelHasPeerPidfd) assert.equal(id.pidfdSource, "SO_PEERPIDFD");

    const memfd = memfdCreate("shared-bar", 4096);
    const map = mmap(memfd, 0, 4096, "rw");
    const bytes = new Uint8Array(map.buffer);
    Buffer.from("from-parent").copy(bytes, 0);
    await sock.send(Buffer.from("here is the memfd"), [memfd]);
    closeFd(memfd);
    const report = JSON.parse((await sock.recv())!.data.toString()) as {
      seen: string;
      uid: number;
      realPid: number;
    };
    assert.equal(report.seen, "from-parent", "the child sees the parent's write");
    assert.equal(report.uid, 65534);
    assert.equal(
      Buffer.from(bytes.subarray(100, 110)).toString(),
      "from-child",
      "the parent sees the child's write",
    );
    map.unmap();

    assert.equal(pidfdAlive(id.pidfd), true);
    let fired = 0;
    const exitSeen = new Promise<void>((resolve) => {
      watchPidfd(id.pidfd, () => {
        fired++;
        resolve();
      });
    });
    const ref = setTimeout(() => {}, 10_000); // the watch is unref'd; keep the test alive meanwhile
    child.kill("SIGKILL");
    await exitSeen;
    clearTimeout(ref);
    assert.equal(await exited, "SIGKILL");
    assert.equal(pidfdAlive(id.pidfd), false);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(fired, 1, "fires once");
    closeFd(id.pidfd);
    assert.equal(await sock.recv(), null, "the killed peer's socket reads EOF");
    sock.close();
  } finally {
    child.kill("SIGKILL");
    server.close();
  }
}

test(
  "uid 65534 peer: shared memfd, real identity via SO_PEERPIDFD, exit watch",
  { skip: !isRoot && "needs root to spawn as uid 65534" },
  () => exchange(false),
);

test(
  "uid 65534 peer: the pidfd_open fallback is used and labelled when SO_PEERPIDFD is off",
  { skip: !isRoot && "needs root" },
  () => exchange(true),
);

test("peerPidfd returns a pidfd on kernels that have SO_PEERPIDFD", {
  skip: !kernelHasPeerPidfd && "kernel < 6.5",
}, async () => {
  const { FdSocket } = await import("./index.js");
  const [a, b] = FdSocket.pair();
  const fd = peerPidfd(a.fd);
  assert.equal(typeof fd, "number");
  assert.equal(pidfdAlive(fd!), true);
  closeFd(fd!);
  a.close();
  b.close();
});

test("watchPidfd: close() cancels, several watches may share a pidfd, and the pidfd stays open", async () => {
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"]);
  await new Promise((r) => child.once("spawn", r));
  const pidfd = pidfdOpen(child.pid!);
  let cancelled = 0;
  const w1 = watchPidfd(pidfd, () => cancelled++);
  const fired = new Promise<void>((resolve) => watchPidfd(pidfd, resolve));
  w1.close();
  w1.close();
  const ref = setTimeout(() => {}, 10_000); // watches are unref'd
  child.kill("SIGKILL");
  await fired;
  clearTimeout(ref);
  assert.equal(cancelled, 0);
  assert.equal(pidfdAlive(pidfd), false, "the caller's pidfd is still open and usable");
  closeFd(pidfd);
});

test("watchOwnPidfd: fires on the caller's pidfd with no fd of its own, never closes it, one per pidfd", async () => {
  const sleeper = () => spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"]);
  const a = sleeper();
  const b = sleeper();
  await Promise.all([a, b].map((c) => new Promise((r) => c.once("spawn", r))));
  const pa = pidfdOpen(a.pid!);
  const pb = pidfdOpen(b.pid!);
  const openFds = () => readdirSync("/proc/self/fd").length;
  const keep = watchPidfd(pb, () => {}); // the thread's epoll set exists before the count
  const n0 = openFds();
  let cancelled = 0;
  const wb = watchOwnPidfd(pb, () => cancelled++);
  const fired = new Promise<string>((resolve) => watchOwnPidfd(pa, resolve, "a"));
  assert.equal(openFds(), n0, "two own-pidfd watches opened no fd (watchPidfd would have dup'ed two)");
  assert.throws(
    () => watchOwnPidfd(pa, () => {}),
    /fd \d+ is already watched/,
    "a second watch on one pidfd",
  );
  wb.close();
  wb.close();
  assert.equal(pidfdAlive(pb), true, "close() left the pidfd open");
  const ref = setTimeout(() => {}, 10_000); // watches are unref'd
  a.kill("SIGKILL");
  b.kill("SIGKILL");
  assert.equal(await fired, "a");
  clearTimeout(ref);
  assert.equal(cancelled, 0, "the closed watch stayed quiet");
  assert.equal(pidfdAlive(pa), false, "the caller's pidfd is still open and usable after the watch fired");
  keep.close();
  closeFd(pa);
  closeFd(pb);
});
