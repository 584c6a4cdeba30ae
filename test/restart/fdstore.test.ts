// The fdstore path end to end (issue 10), with a fake systemd: a python3 process that is brokerd's
// NOTIFY_SOCKET, keeps the fds brokerd parks there (FDSTORE=1, FDNAME=), and on "restart" stops
// brokerd (SIGTERM) and starts a new one with those fds as LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID,
// as systemd does for `systemctl restart` with the fdstore kept. Asserted: brokerd parks its three
// listening sockets; a client that connects while no brokerd runs is queued, not refused; the new
// brokerd serves the inherited sockets (journal inheritedSockets) and a holding CLI resumes.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { it } from "node:test";
import { spawnAs } from "../hostile/support/harness.js";
import { brokerdArgs, CLI, SIM_POLICY, tempDir, until } from "../lib/brokerd.js";

const FAKE_SYSTEMD = String.raw`
import array, json, os, signal, socket, subprocess, sys
notify, argv, errlog = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(notify)
def start(store):
    env = dict(os.environ, NOTIFY_SOCKET=notify)
    names = list(store)
    src = [store[n] for n in names]
    def place():
        # In the child: the stored fds to 3, 4, ... (via high numbers, so none clobbers another).
        high = [os.dup(fd) + 0 for fd in src]
        high = [os.dup2(fd, 200 + i) for i, fd in enumerate(high)] and [200 + i for i in range(len(src))]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)
    if names:
        env.update(LISTEN_FDS=str(len(names)), LISTEN_FDNAMES=":".join(names))
    # LISTEN_PID must be the service's own pid: set by the shell that then execs node.
    # brokerd's output goes to a file: holding the test's pipes, an orphan would keep it waiting.
    return subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"] + argv, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(errlog, "a"),
                            pass_fds=list(range(3, 3 + len(names))), preexec_fn=place if names else None)
def serve(proc, store):
    while True:
        msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(64 * 4))
        fds = array.array("i")
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        kv = dict(l.split("=", 1) for l in msg.decode().split("\n") if "=" in l)
        if kv.get("FDSTORE") == "1":
            for fd in fds:
                store[kv["FDNAME"]] = fd
        if kv.get("READY") == "1":
            return
store = {}
p = start({})
serve(p, store)
print(json.dumps({"ready": 1, "stored": sorted(store)}), flush=True)
sys.stdin.readline()
p.send_signal(signal.SIGTERM)
p.wait()
print(json.dumps({"stopped": p.returncode}), flush=True)
sys.stdin.readline()
kept = dict(store)
p = start(kept)
serve(p, store)
print(json.dumps({"ready": 2, "stored": sorted(store)}), flush=True)
sys.stdin.readline()
p.send_signal(signal.SIGTERM)
p.wait()
print(json.dumps({"ended": p.returncode}), flush=True)
`;

it("fdstore: brokerd parks its sockets with a fake systemd and serves them again after a restart", {
  timeout: 120_000,
}, async () => {
  // The workload dir (sockets) under a home of the test's own: the journal is never in it.
  const home = tempDir("vfio-broker-fdstore-");
  const dir = join(home, "run");
  const policy = join(home, "policy.yaml");
  writeFileSync(policy, readFileSync(SIM_POLICY), { mode: 0o644 });
  const journal = join(home, "journal.jsonl");
  const argv = [process.execPath, ...brokerdArgs(dir, policy, journal)];
  const errlog = join(home, "brokerd.err");
  const py = spawn("python3", ["-c", FAKE_SYSTEMD, join(home, "notify.sock"), JSON.stringify(argv), errlog], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  py.stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  py.stderr.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const brokerdErr = () => {
    try {
      return readFileSync(errlog, "utf8");
    } catch {
      return "";
    }
  };
  const line = (key: string) =>
    until(
      `the fake systemd's ${key} line`,
      () =>
        out
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find((l) => key in l && (key !== "ready" || l.ready === (out.includes('"ready": 2') ? 2 : 1))),
      30_000,
    );
  let holder: ReturnType<typeof spawnAs> | undefined;
  try {
    const first = (await line("ready"))!;
    holder = spawnAs(65534, [CLI, "map", "sim0", "BAR2", "--length", "4K", "--attr", "wc", "--hold"], {
      ...process.env,
      VFIO_BROKER_SOCKET: join(dir, "broker.sock"),
    });
    assert.deepEqual(
      first.stored,
      ["admin.sock", "broker.sock", "fd.sock"],
      `brokerd parks its sockets:\n${err}\n${brokerdErr()}`,
    );
    const h = holder;
    await until("the CLI to hold its mapping", () => /cookie/.test(h.out()), 20_000);
    py.stdin.write("stop\n");
    await line("stopped");
    // No brokerd runs now; the socket lives on in the fake fdstore: a connect is queued, not refused.
    const queued = await new Promise<string>((resolve) => {
      const c = netConnect(join(dir, "broker.sock"));
      c.once("connect", () => {
        c.destroy();
        resolve("connected");
      });
      c.once("error", (e) => resolve((e as NodeJS.ErrnoException).code ?? e.message));
    });
    assert.equal(queued, "connected");
    py.stdin.write("start\n");
    await until("brokerd 2 to be ready", () => out.includes('"ready": 2'), 30_000).catch((e) => {
      throw new Error(`${(e as Error).message}\n${err}\n${brokerdErr()}`);
    });
    await until("the CLI to resume", () => /resumed after a brokerd restart/.test(h.out()), 30_000);
    const starts = readFileSync(journal, "utf8")
      .split("\n")
      .filter((l) => l.includes('"event":"daemon.start"'))
      .map((l) => JSON.parse(l) as { inheritedSockets: string[] });
    assert.deepEqual(starts.at(-1)?.inheritedSockets.sort(), ["admin.sock", "broker.sock", "fd.sock"]);
    assert.equal(h.child.exitCode, null, h.err());
  } finally {
    holder?.child.kill("SIGKILL");
    // The fake systemd stops its brokerd (SIGTERM) and exits; only if it hangs is it killed.
    const exited = new Promise((r) => (py.exitCode !== null ? r(null) : py.once("exit", r)));
    py.stdin.write("end\nend\nend\n");
    const t = setTimeout(() => py.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(t);
    // Whatever brokerd it started must not outlive the test (it would hold the runner's pipes).
    for (const l of readFileSync(journal, "utf8").split("\n"))
      if (l.includes('"event":"daemon.start"'))
        try {
          process.kill((JSON.parse(l) as { pid: number }).pid, "SIGKILL");
        } catch {
          /* already gone */
        }
  }
});
