// fd.test.ts: the fd utilities restarts need. setCloexec really flips FD_CLOEXEC (read back from
// /proc/self/fdinfo), dupFd gives a close-on-exec fd of the same open file, and a listenUnix fd
// serves through net.Server.listen({ fd }) and, closed that way, leaves the socket path in place.
import assert from "node:assert/strict";
import { fstatSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { closeFd, dupFd, listenUnix, memfdCreate, setCloexec } from "./index.js";

const O_CLOEXEC = 0o2000000;

function cloexec(fd: number): boolean {
  const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))![1]!;
  return (Number.parseInt(flags, 8) & O_CLOEXEC) !== 0;
}

test("setCloexec sets and clears FD_CLOEXEC; dupFd is the same open file, close-on-exec", () => {
  const fd = memfdCreate("cloexec", 4096);
  try {
    assert.equal(cloexec(fd), true, "memfds start close-on-exec");
    setCloexec(fd, false);
    assert.equal(cloexec(fd), false);
    setCloexec(fd);
    assert.equal(cloexec(fd), true);
    setCloexec(fd, false);
    const dup = dupFd(fd);
    try {
      assert.notEqual(dup, fd);
      assert.equal(cloexec(dup), true, "dups are close-on-exec whatever the original is");
      assert.equal(fstatSync(dup).ino, fstatSync(fd).ino);
    } finally {
      closeFd(dup);
    }
  } finally {
    closeFd(fd);
  }
  assert.throws(() => setCloexec(fd), { code: "EBADF" });
  assert.throws(() => setCloexec(-1), { code: "EINVAL" });
});

test("listenUnix: the fd serves through net.Server.listen({ fd }) and closing it keeps the path", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vfio-listen-"));
  try {
    const path = join(dir, "l.sock");
    const fd = listenUnix(path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(cloexec(fd), true);
    assert.throws(() => listenUnix(path), { code: "EADDRINUSE" }, "a live listener is never replaced");
    // The EADDRINUSE probe above left a closed connection in the backlog: it gets EPIPE.
    const server = createServer((c) => c.on("error", () => {}).end("hi"));
    await new Promise<void>((resolve) => server.listen({ fd }, resolve));
    const got = await new Promise<string>((resolve, reject) => {
      let s = "";
      createConnection(path)
        .setEncoding("utf8")
        .on("data", (d) => {
          s += d;
        })
        .on("end", () => resolve(s))
        .on("error", reject);
    });
    assert.equal(got, "hi");
    await new Promise((resolve) => server.close(resolve));
    assert.equal(statSync(path).isSocket(), true, "a server listening by fd does not unlink the path");
    const again = listenUnix(path); // stale now: replaced
    closeFd(again);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
