// handover.test.ts: the fd hand-over between two real processes over real sockets. The old brokerd
// is a child (testdata/handover-old.ts); the taker is this process or another child (as uid 65534
// for the refusals). Covered: the fds are the same open files (dev/ino, bytes written by the new
// side read back by the old), a client that connects while neither side accepts is served by the
// new one, >253 fds in several frames, wrong uid (both directions), a taker killed mid-transfer
// (the old side aborts, keeps its fds and serves again), a concurrent second taker, timeouts,
// protocol violations, and done() failing or exiting the process.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import {
  chmodSync,
  fstatSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  readSync,
  rmSync,
  writeSync,
} from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { closeFd, FdServer, listenUnix, memfdCreate } from "@vfio-broker/native";
import type { NamedFd } from "./fdstore.js";
import { HandoverError, offerHandover, takeOver } from "./handover.js";

const root = mkdtempSync(join(tmpdir(), "vfio-handover-"));
chmodSync(root, 0o755); // uid 65534 takers must reach the sockets
after(() => rmSync(root, { recursive: true, force: true }));
const isRoot = process.geteuid?.() === 0;
let seq = 0;

type Line = Record<string, unknown>;

/** A child speaking one JSON object per stdout line. */
class Proc {
  readonly lines: Line[] = [];
  readonly exited: Promise<number | null>;
  stderr = "";
  #waiters: (() => void)[] = [];
  #done = false;

  constructor(readonly child: ChildProcess) {
    let buf = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        this.lines.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
      for (const w of this.#waiters.splice(0)) w();
    });
    child.stderr!.setEncoding("utf8").on("data", (d: string) => {
      this.stderr += d;
    });
    this.exited = new Promise((resolve) =>
      child.once("exit", (code) => {
        this.#done = true;
        for (const w of this.#waiters.splice(0)) w();
        resolve(code);
      }),
    );
  }

  /** The first line matching pred (waiting for it); rejects if the process exits first. */
  async wait(pred: (l: Line) => boolean, what: string): Promise<Line> {
    for (;;) {
      const l = this.lines.find(pred);
      if (l) return l;
      if (this.#done) throw new Error(`child exited before ${what}: ${this.stderr}`);
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }

  event(name: string): Promise<Line> {
    return this.wait((l) => l.event === name, `event ${name}`);
  }

  kill(): Promise<number | null> {
    if (!this.#done) this.child.kill("SIGKILL");
    return this.exited;
  }
}

const testdata = (name: string): string => new URL(`./testdata/${name}`, import.meta.url).pathname;

async function startOld(
  config: { extra?: number; holdCollect?: boolean; exitInDone?: boolean; failDone?: boolean } = {},
): Promise<{ old: Proc; handover: string; listen: string; ready: Line }> {
  const dir = join(root, `t${seq++}`);
  const handover = `${dir}-handover.sock`;
  const listen = `${dir}-brokerd.sock`;
  const old = new Proc(
    spawn(process.execPath, [testdata("handover-old.js"), handover, listen, JSON.stringify(config)], {
      stdio: ["pipe", "pipe", "pipe"],
    }),
  );
  const ready = await old.event("ready");
  return { old, handover, listen, ready };
}

function ask(path: string, onConnect?: () => void): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = "";
    createConnection(path, onConnect)
      .setEncoding("utf8")
      .on("data", (d) => {
        s += d;
      })
      .on("end", () => resolve(s))
      .on("error", reject);
  });
}

function spawnTaker(mode: string, path: string, uid?: number): Proc {
  return new Proc(
    spawn(process.execPath, [testdata("handover-taker.js"), mode, path], {
      stdio: ["ignore", "pipe", "pipe"],
      ...(uid === undefined ? {} : { uid, gid: uid }),
    }),
  );
}

const openFds = (): number => readdirSync("/proc/self/fd").length;
const memfdsNamed = (prefix: string): number =>
  readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(`/memfd:${prefix}`);
    } catch {
      return false; // the directory's own fd, gone by now
    }
  }).length;
const closeAll = (fds: NamedFd[]): void => {
  for (const f of fds) closeFd(f.fd);
};

test("the new side gets the same open files and the listener; a client queued in the gap is served", async () => {
  const { old, handover, listen, ready } = await startOld({ holdCollect: true });
  try {
    const pid = ready.pid as number;
    assert.equal(await ask(listen), `old ${pid}`, "the old brokerd serves");
    const taking = takeOver(handover, 5000);
    await old.event("frozen");
    // Neither side accepts now: the connection waits in the listener's backlog.
    let connected = false;
    const queued = ask(listen, () => {
      connected = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(connected, true, "connect() succeeded while nobody accepts (queued, not refused)");
    old.child.stdin!.write("go\n");
    const t = await taking;
    assert.equal(t.oldPid, pid);
    assert.deepEqual(t.meta, { from: "old", pid });
    assert.deepEqual(
      t.fds.map((f) => f.name),
      ["bar0", "listener"],
    );
    assert.deepEqual(
      t.fds.map((f) => {
        const st = fstatSync(f.fd);
        return { name: f.name, dev: st.dev, ino: st.ino };
      }),
      ready.files,
      "same inodes as the old process holds",
    );
    const bar = t.fds[0]!.fd;
    const b = Buffer.alloc(9);
    readSync(bar, b, 0, 9, 0);
    assert.equal(b.toString(), "old bytes");
    writeSync(bar, Buffer.from("new bytes"), 0, 9, 0);

    const server = createServer((c) => c.end(`new ${process.pid}`));
    await new Promise<void>((resolve) => server.listen({ fd: t.fds[1]!.fd }, resolve));
    assert.equal(
      await queued,
      `new ${process.pid}`,
      "the client that connected in the gap is served, not refused",
    );
    await t.confirm();
    const done = await old.event("done");
    assert.equal(done.bar0, "new bytes", "the old process reads what the new one wrote: one memfd");
    assert.equal(await old.exited, 0, "the old brokerd exits once it has handed over");
    assert.equal(await ask(listen), `new ${process.pid}`);
    await assert.rejects(takeOver(handover, 1000), {
      code: "ENOBROKER",
      message: /no brokerd to take over from at/,
    });
    await new Promise((r) => server.close(r)); // closes the listener fd
    closeFd(bar);
  } finally {
    await old.kill();
  }
});

test("1000 fds go in several frames, names in order; done() may exit the process", async () => {
  const { old, handover, ready } = await startOld({ extra: 1000, exitInDone: true });
  try {
    const start = performance.now();
    const t = await takeOver(handover, 10_000);
    const took = performance.now() - start;
    assert.equal(t.fds.length, 1002);
    assert.deepEqual(
      t.fds.map((f) => f.name),
      ["bar0", "listener", ...Array.from({ length: 1000 }, (_, i) => `extra-${i}`)],
    );
    const files = ready.files as { dev: number; ino: number }[];
    t.fds.forEach((f, i) => {
      assert.equal(fstatSync(f.fd).ino, files[i]!.ino, f.name);
    });
    const c0 = performance.now();
    await t.confirm();
    console.log(
      `# 1002 fds: takeOver ${took.toFixed(1)} ms, confirm (old exits in done()) ${(performance.now() - c0).toFixed(1)} ms`,
    );
    assert.equal(await old.exited, 0);
    assert.equal(memfdsNamed("extra-"), 1000);
    closeAll(t.fds);
    assert.equal(memfdsNamed("extra-"), 0, "every received fd closed");
  } finally {
    await old.kill();
  }
});

test("another uid is refused: by the taker's check and by the old side's own check", {
  skip: !isRoot && "needs root",
}, async () => {
  const { old, handover, listen, ready } = await startOld();
  try {
    chmodSync(handover, 0o666); // as if misconfigured: the uid check must still hold
    const nobody = spawnTaker("takeOver", handover, 65534);
    const r = await nobody.wait((l) => "ok" in l, "the taker's result");
    assert.deepEqual({ ok: r.ok, code: r.code }, { ok: false, code: "EPERM" }, String(r.message));
    assert.match(
      String(r.message),
      new RegExp(`from pid ${ready.pid} .*: it runs as uid 0, this brokerd as uid 65534`),
    );
    const raw = spawnTaker("raw", handover, 65534);
    const got = await raw.wait((l) => "frame" in l, "the raw taker's frame");
    assert.deepEqual(got, {
      frame: { op: "refused", reason: "uid 65534 may not take over this brokerd (it runs as uid 0)" },
      fds: 0,
    });
    const refused = await old.event("refused");
    assert.equal(refused.uid, 65534);
    assert.equal(old.lines.filter((l) => l.event === "frozen").length, 0, "never frozen for them");
    assert.equal(await ask(listen), `old ${ready.pid}`, "still serving");
    const t = await takeOver(handover, 5000); // the right uid still can
    await t.confirm();
    closeAll(t.fds);
  } finally {
    await old.kill();
  }
});

test("a taker killed mid-transfer: the old side aborts, keeps every fd and serves again", async () => {
  const { old, handover, listen, ready } = await startOld({ extra: 600 });
  try {
    const dying = spawnTaker("die", handover);
    const got = await dying.wait((l) => "got" in l, "the dying taker");
    assert.equal(got.got, 253, "it held the first frame's fds when it died");
    await dying.exited;
    const aborted = await old.event("aborted");
    assert.match(String(aborted.reason), /aborted: /);
    assert.equal(aborted.open, 602);
    assert.equal(aborted.total, 602);
    assert.equal(aborted.bar0, "old bytes");
    assert.equal(await ask(listen), `old ${ready.pid}`, "serving again after abort()");
    const t = await takeOver(handover, 5000); // and it can still hand over
    assert.equal(t.fds.length, 602);
    await t.confirm();
    closeAll(t.fds);
  } finally {
    await old.kill();
  }
});

test("a second taker is refused while a hand-over is in progress", async () => {
  const { old, handover } = await startOld({ holdCollect: true });
  try {
    const first = takeOver(handover, 5000);
    await old.event("frozen");
    await assert.rejects(takeOver(handover, 5000), {
      code: "EREFUSED",
      message: /refused the hand-over: a hand-over to pid \d+ is already in progress/,
    });
    old.child.stdin!.write("go\n");
    const t = await first;
    await t.confirm();
    closeAll(t.fds);
    assert.equal(await old.exited, 0);
  } finally {
    await old.kill();
  }
});

test("a taker that times out while the old side is frozen makes it abort", async () => {
  const { old, handover, listen, ready } = await startOld({ holdCollect: true });
  try {
    const before = openFds();
    await assert.rejects(takeOver(handover, 300), {
      code: "ETIMEDOUT",
      message: /timed out after 300 ms waiting for the old brokerd at .* to hand over its fds/,
    });
    assert.equal(openFds(), before);
    old.child.stdin!.write("go\n");
    const aborted = await old.event("aborted");
    assert.equal(aborted.open, 2);
    assert.equal(await ask(listen), `old ${ready.pid}`);
  } finally {
    await old.kill();
  }
});

test("a taker that abandons (it will not serve) makes the old side abort with its reason and serve again", async () => {
  const { old, handover, listen, ready } = await startOld();
  try {
    const before = openFds();
    const t = await takeOver(handover, 5000);
    assert.ok(t.fds.length > 0);
    await t.abandon("its check of the state store failed: damaged on purpose");
    assert.equal(openFds(), before, "every fd taken and the socket are closed");
    const aborted = await old.event("aborted");
    assert.match(
      String(aborted.reason),
      /will not serve: its check of the state store failed: damaged on purpose/,
    );
    assert.equal(aborted.open, 2);
    assert.equal(await ask(listen), `old ${ready.pid}`, "serving again after abort()");
    // abandon() settles the hand-over: a later confirm() cannot take the fds after all.
    await t.confirm();
    assert.equal(await ask(listen), `old ${ready.pid}`);
  } finally {
    await old.kill();
  }
});

test("done() failing aborts: confirm() rejects and the old side serves again", async () => {
  const { old, handover, listen, ready } = await startOld({ failDone: true });
  try {
    const t = await takeOver(handover, 5000);
    await assert.rejects(t.confirm(), {
      code: "EABORTED",
      message: /aborted the hand-over after all .*done\(\) failed: done failed on purpose/,
    });
    closeAll(t.fds);
    await old.event("aborted");
    assert.equal(await ask(listen), `old ${ready.pid}`);
  } finally {
    await old.kill();
  }
});

test("nothing to take over from, a stale socket, a live offer and protocol violations", async () => {
  const dir = mkdtempSync(join(root, "proto-"));
  await assert.rejects(takeOver(join(dir, "none.sock"), 1000), {
    code: "ENOBROKER",
    message: /no brokerd to take over from at .*none\.sock \(ENOENT\)/,
  });
  const stale = join(dir, "stale.sock");
  closeFd(listenUnix(stale));
  await assert.rejects(takeOver(stale, 1000), { code: "ENOBROKER", message: /\(ECONNREFUSED\)/ });

  const hooks = { collect: async () => ({ fds: [], meta: null }), done() {}, abort() {} };
  const offer = offerHandover(stale, hooks); // a stale socket is replaced
  assert.throws(
    () => offerHandover(stale, hooks),
    (err: unknown) => {
      assert.ok(err instanceof HandoverError);
      assert.equal(err.code, "EREFUSED");
      assert.match(err.message, /another process is already offering a hand-over at/);
      return true;
    },
  );
  const empty = await takeOver(stale, 1000);
  assert.deepEqual([empty.fds, empty.meta], [[], null]);
  await empty.confirm();
  await offer.close();

  // A fake old side that breaks the protocol in several ways; no fd may leak from any.
  const lies: Buffer[][] = [
    [Buffer.from("not json")],
    [Buffer.from(JSON.stringify({ op: "fds", names: ["a", "b"], total: 2 }))], // names 2, carries 1
    [
      Buffer.from(JSON.stringify({ op: "fds", names: ["a"], total: 1 })),
      Buffer.from('{"op":"end","count":5}'),
    ],
    [Buffer.from(JSON.stringify({ op: "fds", names: ["a"] }))], // no total
    [Buffer.from(JSON.stringify({ op: "dance" }))],
  ];
  for (const [i, frames] of lies.entries()) {
    const path = join(dir, `liar${i}.sock`);
    const liar = FdServer.listen(path);
    const memfd = memfdCreate("lie", 0);
    liar.onConnection(async (sock) => {
      await sock.recv();
      for (const f of frames) await sock.send(f, f === frames[0] && i > 0 ? [memfd] : []);
      sock.close();
    });
    const before = openFds();
    await assert.rejects(takeOver(path, 2000), { code: "EPROTO" }, `lie ${i}`);
    assert.equal(openFds(), before, `lie ${i}: nothing leaked`);
    liar.close();
    closeFd(memfd);
  }
});
