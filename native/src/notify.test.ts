// notify.test.ts: sdNotify against a fake systemd (python3 with an AF_UNIX SOCK_DGRAM socket, since
// Node has none): the state string arrives, FDSTORE=1 fds arrive as real fds, '@' abstract names
// work, and an unset NOTIFY_SOCKET returns false.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { closeFd, memfdCreate, sdNotify } from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "vfio-native-notify-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const FAKE_SYSTEMD = `
import array, json, os, socket, sys
addr = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + addr[1:] if addr.startswith("@") else addr)
print("ready", flush=True)
fds = array.array("i")
msg, anc, flags, _ = s.recvmsg(4096, socket.CMSG_SPACE(16 * fds.itemsize))
for level, kind, data in anc:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
print(json.dumps({"state": msg.decode(), "fds": [os.readlink("/proc/self/fd/%d" % fd) for fd in fds], "flags": flags}), flush=True)
`;

async function fakeSystemd(
  address: string,
  send: () => boolean,
): Promise<{ state: string; fds: string[]; flags: number }> {
  const py = spawn("python3", ["-c", FAKE_SYSTEMD, address], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  py.stdout.setEncoding("utf8");
  const lines = new Promise<string[]>((resolve, reject) => {
    py.stdout.on("data", (d: string) => {
      out += d;
      if (out.startsWith("ready\n")) {
        const rest = out.slice(6);
        if (rest.includes("\n")) resolve(out.trim().split("\n"));
      }
    });
    py.on("exit", (code) =>
      code === 0 ? resolve(out.trim().split("\n")) : reject(new Error(`python3 exited ${code}: ${out}`)),
    );
  });
  await new Promise<void>((resolve) => {
    const check = (): void => (out.startsWith("ready\n") ? resolve() : void setTimeout(check, 5));
    check();
  });
  const old = process.env.NOTIFY_SOCKET;
  process.env.NOTIFY_SOCKET = address;
  try {
    assert.equal(send(), true);
  } finally {
    if (old === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = old;
  }
  const result = (await lines)[1]!;
  return JSON.parse(result);
}

test("sdNotify returns false when NOTIFY_SOCKET is unset", () => {
  delete process.env.NOTIFY_SOCKET;
  assert.equal(sdNotify("READY=1"), false);
});

test("sdNotify delivers the state string to a path socket", async () => {
  const got = await fakeSystemd(join(dir, "notify.sock"), () => sdNotify("READY=1\nSTATUS=serving"));
  assert.equal(got.state, "READY=1\nSTATUS=serving");
  assert.deepEqual(got.fds, []);
});

test("sdNotify FDSTORE=1 passes the fds to an abstract '@' socket", async () => {
  const a = memfdCreate("fdstore-a", 4096);
  const b = memfdCreate("fdstore-b", 4096);
  try {
    const got = await fakeSystemd(`@vfio-native-notify-${process.pid}`, () =>
      sdNotify("FDSTORE=1\nFDNAME=bars", [a, b]),
    );
    assert.equal(got.state, "FDSTORE=1\nFDNAME=bars");
    assert.deepEqual(got.fds, ["/memfd:fdstore-a (deleted)", "/memfd:fdstore-b (deleted)"]);
    assert.equal(got.flags & 0x8, 0, "no MSG_CTRUNC");
  } finally {
    closeFd(a);
    closeFd(b);
  }
});

test("sdNotify with nobody listening throws a NativeError naming the socket", () => {
  process.env.NOTIFY_SOCKET = join(dir, "nobody.sock");
  try {
    assert.throws(() => sdNotify("READY=1"), {
      code: "ENOENT",
      message: /^sendmsg\(NOTIFY_SOCKET .*nobody\.sock\): No such file or directory$/,
    });
    process.env.NOTIFY_SOCKET = "relative/path";
    assert.throws(() => sdNotify("READY=1"), { code: "EINVAL" });
  } finally {
    delete process.env.NOTIFY_SOCKET;
  }
});
