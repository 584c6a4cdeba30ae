// errors.test.ts: bad inputs across the API (closed fds, non-sockets, too many fds, non-integers)
// throw NativeError with errno, code, syscall and a readable message; ioctl moves bytes both ways.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { raw } from "./binding.js";
import {
  closeFd,
  FdSocket,
  ioctl,
  memfdCreate,
  NativeError,
  peerCred,
  peerIdentity,
  peerPidfd,
  pidfdAlive,
  pidfdOpen,
  sdNotify,
} from "./index.js";

function closedFd(): number {
  const fd = memfdCreate("vfio-native-closed", 0);
  closeFd(fd);
  return fd;
}

function expectNative(fn: () => unknown, code: string, message: RegExp | string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof NativeError, `expected NativeError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(typeof err.errno, "number");
    assert.equal(typeof err.syscall, "string");
    if (typeof message === "string") assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

test("closed fds give EBADF with the syscall and fd in the message", () => {
  const fd = closedFd();
  expectNative(() => closeFd(fd), "EBADF", `close(fd ${fd}): Bad file descriptor`);
  expectNative(() => peerCred(fd), "EBADF", `getsockopt(fd ${fd}, SO_PEERCRED): Bad file descriptor`);
  expectNative(() => raw.sendmsg(fd, Buffer.from("x")), "EBADF", `sendmsg(fd ${fd}): Bad file descriptor`);
  expectNative(() => pidfdAlive(fd), "EBADF", `poll(pidfd ${fd}): Bad file descriptor`);
  expectNative(() => ioctl(fd, 0x5451), "EBADF", /^ioctl\(fd \d+, request 0x5451\): Bad file descriptor$/);
  expectNative(() => FdSocket.adopt(fd), "EBADF", /getsockopt\(fd \d+, SO_DOMAIN\): Bad file descriptor/);
});

test("a non-socket fd is ENOTSOCK for sendmsg, peerCred, peerPidfd, peerIdentity and adopt", () => {
  const fd = memfdCreate("vfio-native-notsock", 16);
  try {
    expectNative(
      () => raw.sendmsg(fd, Buffer.from("x")),
      "ENOTSOCK",
      `sendmsg(fd ${fd}): Socket operation on non-socket`,
    );
    expectNative(() => peerCred(fd), "ENOTSOCK", /SO_PEERCRED\): Socket operation on non-socket/);
    expectNative(() => peerPidfd(fd), "ENOTSOCK", /SO_PEERPIDFD\): Socket operation on non-socket/);
    expectNative(() => peerIdentity(fd), "ENOTSOCK", /Socket operation on non-socket/);
    expectNative(() => FdSocket.adopt(fd), "ENOTSOCK", /Socket operation on non-socket/);
  } finally {
    closeFd(fd);
  }
});

test("more than 253 fds in one message is refused before any syscall", async () => {
  const [a, b] = FdSocket.pair();
  const fds = new Array<number>(254).fill(0);
  expectNative(
    () => raw.sendmsg(a.fd, Buffer.from("x"), fds),
    "EINVAL",
    /at most 253 fds fit in one message/,
  );
  await assert.rejects(a.send(Buffer.from("x"), fds), { code: "EINVAL", message: /at most 253 fds/ });
  process.env.NOTIFY_SOCKET = "/nonexistent/notify";
  try {
    expectNative(() => sdNotify("FDSTORE=1", fds), "EINVAL", /at most 253 fds/);
  } finally {
    delete process.env.NOTIFY_SOCKET;
  }
  a.close();
  b.close();
});

test("non-integer and out-of-range arguments are EINVAL, validated in C", () => {
  expectNative(() => closeFd(1.5), "EINVAL", "close: fd must be an integer, got 1.5");
  expectNative(() => closeFd(-1), "EINVAL", /fd must be between 0 and 2147483647, got -1/);
  expectNative(() => closeFd(Number.NaN), "EINVAL", /fd must be an integer/);
  expectNative(() => closeFd("3" as unknown as number), "EINVAL", /got string/);
  expectNative(() => closeFd(undefined as unknown as number), "EINVAL", /got undefined/);
  expectNative(() => pidfdOpen(0), "EINVAL", /pid must be between 1/);
  expectNative(() => pidfdOpen(2 ** 40), "EINVAL", /pid must be between 1/);
  expectNative(() => raw.sendmsg(1, "text" as unknown as Uint8Array), "EINVAL", /data must be a Uint8Array/);
  expectNative(
    () => raw.sendmsg(1, [1] as unknown as Uint8Array[], [1.5]),
    "EINVAL",
    /data must be a Uint8Array/,
  );
  expectNative(() => ioctl(0, -1), "EINVAL", /request must be a non-negative integer/);
  expectNative(() => ioctl(0, 1, "x" as unknown as number), "EINVAL", /arg must be a Uint8Array/);
  expectNative(() => memfdCreate("a\0b", 1), "EINVAL", /NUL/);
});

test("ioctl updates an in/out buffer in place, checks _IOC sizes, and passes integer args", () => {
  const pidfd = pidfdOpen(process.pid);
  try {
    // PIDFD_GET_INFO = _IOWR(0xFF, 11, struct pidfd_info /* 64 bytes */), Linux 6.13+.
    const PIDFD_GET_INFO = ((3 << 30) | (64 << 16) | (0xff << 8) | 11) >>> 0;
    const info = Buffer.alloc(64);
    info.writeBigUInt64LE(1n, 0); // PIDFD_INFO_PID
    try {
      assert.equal(ioctl(pidfd, PIDFD_GET_INFO, info), 0);
      assert.equal(info.readUInt32LE(16), process.pid, "pid written back by the kernel");
      assert.equal(info.readUInt32LE(20), process.pid, "tgid written back by the kernel");
    } catch (err) {
      if ((err as NativeError).code !== "ENOTTY") throw err; // kernel < 6.13
    }
    expectNative(
      () => ioctl(pidfd, PIDFD_GET_INFO, Buffer.alloc(8)),
      "EINVAL",
      /moves 64 bytes but the buffer holds only 8/,
    );
    // Integer form reaches the kernel as is: 4096 is an unmapped address, so EFAULT.
    expectNative(
      () => ioctl(pidfd, PIDFD_GET_INFO, 4096),
      "EFAULT",
      /^ioctl\(fd \d+, request 0xc040ff0b\): Bad address$/,
    );
  } finally {
    closeFd(pidfd);
  }
  // FIONREAD (a legacy request without _IOC size) with a 4-byte out buffer; FIONCLEX/FIOCLEX with no arg.
  const [a, b] = FdSocket.pair();
  raw.sendmsg(a.fd, Buffer.from("12345"));
  const n = Buffer.alloc(4);
  assert.equal(ioctl(b.fd, 0x541b, n), 0);
  assert.equal(n.readInt32LE(0), 5);
  const flags = (): number =>
    Number.parseInt(/flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${b.fd}`, "utf8"))![1]!, 8);
  ioctl(b.fd, 0x5450); // FIONCLEX
  assert.equal(flags() & 0o2000000, 0);
  ioctl(b.fd, 0x5451); // FIOCLEX
  assert.equal(flags() & 0o2000000, 0o2000000);
  a.close();
  b.close();
});
