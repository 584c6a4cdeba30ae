// End to end: `vfio-broker exec` as uid 65534 against brokerd (its own process, sim backend) hands
// a WC mapping's fd to a C program (clients/c/examples/fd-poke.c) that mmaps it at
// VFIO_BROKER_MMAP_OFFSET and writes; another session reads the bytes back through ReadRegion. The
// program's fds are only 0-2 and the backing (no session socket); the grant is held while it runs
// and released when it exits; SIGINT/SIGTERM/SIGHUP reach it from exec; exec exits with its
// status; a refused map or a missing program runs nothing; a revocation or the session's end warns
// (or signals it) and keeps the pages held until exec exits; and what docs say brokerd cannot
// prevent: the program's child, or the program after exec was killed with -9, still maps the pages
// brokerd freed.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AdminService, createClient, Layout, MappingState } from "@vfio-broker/proto";
import { type BrokerProcess, CLI, NOBODY, REPO, run, startBrokerd, until } from "../lib/brokerd.js";
import { brokerClient } from "./agents/raw.js";

const POKE = join(REPO, "clients/c/build/examples/vfb-fd-poke");

/** exec as uid 65534 with its stdout read line by line. */
function startExec(b: BrokerProcess, args: string[]) {
  const child = spawn(process.execPath, [CLI, "exec", "--socket", b.socket, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    uid: NOBODY,
    gid: NOBODY,
  });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { child, exited, out: () => out, err: () => err };
}

/** exec as uid 65534 to its end, against the brokerd at `socket`. */
function runExec(socket: string, args: string[]) {
  return run(process.execPath, [CLI, "exec", "--socket", socket, ...args], { uid: NOBODY });
}

/** `length` bytes at `offset` in sim0's BAR2, read by another session (root, gRPC ReadRegion). */
async function readBar2(socket: string, offset: bigint, length: number): Promise<string> {
  const rpc = brokerClient(socket);
  try {
    await rpc.hello({ clientName: "exec-reader" });
    const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
    const base = df.regions.find((x) => x.region?.index === 2)!.cookie;
    const read = await rpc.readRegion({ deviceFileId: df.deviceFileId, offset: base + offset, length });
    return Buffer.from(read.data).toString("hex");
  } finally {
    rpc.close();
  }
}

/** What fd n of this process is ("" if not open): a fd PROGRAM may have only by inheriting it from us. */
function inheritedHere(n: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${n}`);
  } catch {
    return "";
  }
}

/** The targets of a process's open fds, by number. */
function fdsOf(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const n of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(n), readlinkSync(`/proc/${pid}/fd/${n}`));
    } catch {}
  }
  return out;
}

function killQuietly(p: ChildProcess | number | undefined): void {
  try {
    if (typeof p === "number") process.kill(p, "SIGKILL");
    else p?.kill("SIGKILL");
  } catch {}
}

describe("vfio-broker exec (sim backend)", () => {
  let b: BrokerProcess;
  let admin: ReturnType<typeof createClient<typeof AdminService>>;
  const mappingsOf = async (pid: number) =>
    (await admin.listMappings({})).mappings.filter((m) => m.identity?.pid === pid);
  before(async () => {
    assert.ok(existsSync(POKE), `${POKE} is missing: npm run build (make -C clients/c examples)`);
    b = await startBrokerd();
    admin = createClient(AdminService, `unix:${b.adminSocket}`);
  });
  after(async () => {
    admin?.close();
    await b?.stop();
  });

  it("PROGRAM maps fd 3 at VFIO_BROKER_MMAP_OFFSET and writes; another session reads the bytes; released after it exits", async () => {
    const r = await runExec(b.socket, [
      "sim0",
      "BAR2",
      "--offset",
      "0x20000",
      "--length",
      "8K",
      "--attr",
      "wc",
      "--",
      POKE,
      "--write",
      "0x100=feedfacecafebeef",
      "--read",
      "0x100:8",
      "--fds",
      "--exit",
      "7",
    ]);
    assert.equal(r.code, 7, `exec: ${r.stderr}`);
    assert.match(r.stdout, /^0x100: feedfacecafebeef$/m);
    // Its fds: stdin, stdout, stderr (the socketpairs run() gave exec), the backing as fd 3, and
    // only what exec itself inherited from this test (open here too, with the same target): none of
    // exec's own, so not its session socket.
    const fds = [...r.stdout.matchAll(/^fd (\d+) (.*)$/gm)].map((x) => [Number(x[1]), x[2]!] as const);
    assert.deepEqual(
      fds.slice(0, 4).map(([n]) => n),
      [0, 1, 2, 3],
      r.stdout,
    );
    assert.match(
      fds[3]![1],
      /^\/memfd:|\/sim0\.BAR2$/,
      "fd 3 is the sim BAR (a memfd, or its file in the state dir)",
    );
    for (const [n, target] of fds.slice(4))
      assert.equal(target, inheritedHere(n), `fd ${n} of PROGRAM is exec's`);
    // Another session (root, gRPC) reads what the program wrote through its own mmap.
    assert.equal(await readBar2(b.socket, 0x20100n, 8), "feedfacecafebeef");
    // exec released the grant before it exited: no mapping of uid 65534 is left.
    const left = (await admin.listMappings({})).mappings.filter((m) => m.identity?.uid === NOBODY);
    assert.deepEqual(left, []);
  });

  it("PROGRAM's environment describes the fd", async () => {
    const r = await runExec(b.socket, [
      "sim0",
      "2",
      "--offset",
      "64K",
      "--length",
      "4K",
      "--prot",
      "ro",
      "--",
      "env",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const env = Object.fromEntries(
      [...r.stdout.matchAll(/^(VFIO_BROKER_[A-Z_]+)=(.*)$/gm)]
        .filter((x) => process.env[x[1]!] === undefined) // not what it inherited from this test
        .map((x) => [x[1], x[2]]),
    );
    assert.deepEqual(env, {
      VFIO_BROKER_FD: "3",
      VFIO_BROKER_MMAP_OFFSET: "65536", // the memfd is the whole BAR: the region offset
      VFIO_BROKER_LENGTH: "4096",
      VFIO_BROKER_ATTR: "uc",
      VFIO_BROKER_PROT: "r",
      VFIO_BROKER_DEVICE: "sim0",
      VFIO_BROKER_REGION: "BAR2",
      VFIO_BROKER_REGION_OFFSET: "65536",
      VFIO_BROKER_BACKING: "memfd",
    });
  });

  it("holds the grant while PROGRAM runs (exec is the holder); SIGINT, SIGTERM and SIGHUP reach PROGRAM from exec; exec exits with its status", async () => {
    for (const [sig, n] of [
      ["SIGHUP", 1],
      ["SIGINT", 2],
      ["SIGTERM", 15],
    ] as const) {
      const e = startExec(b, ["sim1", "BAR4", "--length", "4K", "--", POKE, "--wait"]);
      try {
        await until("PROGRAM to wait", () => e.out().includes("waiting\n") || e.child.exitCode !== null);
        assert.ok(e.out().includes("waiting"), `exec: ${e.err()}`);
        const held = await mappingsOf(e.child.pid!);
        assert.equal(held.length, 1, "the grant is listed with exec's pid as its holder");
        assert.equal(held[0]!.identity?.uid, NOBODY);
        process.kill(e.child.pid!, sig);
        const end = await e.exited;
        assert.equal(end.code, 100 + n, `${sig}: ${e.out()} ${e.err()}`);
        assert.match(e.out(), new RegExp(`^signal ${n} from pid ${e.child.pid}$`, "m"));
        assert.deepEqual(await mappingsOf(e.child.pid!), [], `${sig}: released after PROGRAM exited`);
      } finally {
        killQuietly(e.child);
      }
    }
  });

  it("exit status: PROGRAM's code, 128+N when signal N killed it", async () => {
    const exit3 = await runExec(b.socket, [
      "sim0",
      "BAR2",
      "--length",
      "4K",
      "--",
      "/bin/sh",
      "-c",
      "exit 3",
    ]);
    assert.equal(exit3.code, 3, exit3.stderr);
    const killed = await runExec(b.socket, [
      "sim0",
      "BAR2",
      "--length",
      "4K",
      "--",
      "/bin/sh",
      "-c",
      "kill -USR1 $$",
    ]);
    assert.equal(killed.code, 128 + 10, killed.stderr);
  });

  it("a missing program: 127 and a message, the grant released; a map brokerd refuses: PROGRAM never runs", async () => {
    const missing = await runExec(b.socket, ["sim0", "BAR2", "--length", "4K", "--", "/nonexistent/prog"]);
    assert.equal(missing.code, 127);
    assert.match(
      missing.stderr,
      /^vfio-broker: cannot run \/nonexistent\/prog: not found; the mapping is released$/m,
    );
    assert.deepEqual(
      (await admin.listMappings({})).mappings.filter((m) => m.identity?.uid === NOBODY),
      [],
    );
    const dir = mkdtempSync(join(tmpdir(), "vfio-exec-"));
    chmodSync(dir, 0o777);
    const marker = join(dir, "ran");
    // A policy that lets uid 65534 map sim0's BAR2 UC only: WC is refused before anything runs.
    const strict = await startBrokerd({
      policyText: [
        "version: 1",
        "rules:",
        "  - name: uc-only",
        "    match: { any: true }",
        '    devices: ["sim0"]',
        '    regions: ["BAR2"]',
        "    attributes: [UC]",
        "    prot: [r, rw]",
        "",
      ].join("\n"),
    });
    try {
      const refused = await runExec(strict.socket, [
        "sim0",
        "BAR2",
        "--length",
        "4K",
        "--attr",
        "wc",
        "--",
        "/bin/touch",
        marker,
      ]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /^vfio-broker: .*(policy|WC|not allowed|denied)/im);
      assert.equal(existsSync(marker), false, "PROGRAM ran although the map was refused");
      const ok = await runExec(strict.socket, ["sim0", "BAR2", "--length", "4K", "--", "/bin/touch", marker]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(existsSync(marker), true, "the same command with UC runs PROGRAM");
    } finally {
      await strict.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a revocation while PROGRAM runs: a warning, the pages held until exec exits; --on-revoke TERM signals PROGRAM", async () => {
    const warn = startExec(b, ["sim0", "BAR2", "--offset", "1M", "--length", "4K", "--", POKE, "--wait"]);
    const term = startExec(b, [
      "sim0",
      "BAR2",
      "--offset",
      "2M",
      "--length",
      "4K",
      "--on-revoke",
      "TERM",
      "--",
      POKE,
      "--wait",
    ]);
    try {
      for (const e of [warn, term]) {
        await until("PROGRAM to wait", () => e.out().includes("waiting\n") || e.child.exitCode !== null);
        const [m] = await mappingsOf(e.child.pid!);
        assert.ok(m?.mapping, `exec: ${e.err()}`);
        await admin.revokeMapping({
          deviceFileId: m.mapping.deviceFileId,
          cookie: m.mapping.cookie,
          reason: "test",
        });
      }
      // --on-revoke TERM: PROGRAM gets SIGTERM from exec, exits, exec exits with its status.
      const t = await term.exited;
      assert.equal(t.code, 115, term.err());
      assert.match(term.out(), new RegExp(`^signal 15 from pid ${term.child.pid}$`, "m"));
      assert.match(term.err(), /brokerd revoked the mapping \(operator/);
      assert.match(term.err(), /sending SIGTERM to .*vfb-fd-poke/);
      // Default: a warning; PROGRAM runs on, and brokerd holds its pages while exec lives.
      await until("the warning", () => warn.err().includes("brokerd revoked the mapping"));
      assert.match(
        warn.err(),
        /keeps its mmap, which brokerd cannot take back; brokerd keeps its pages booked until exec exits/,
      );
      assert.equal(warn.child.exitCode, null, "PROGRAM was not stopped");
      const held = await mappingsOf(warn.child.pid!);
      assert.equal(held.length, 1);
      assert.equal(held[0]!.mapping?.state, MappingState.REVOKING);
      process.kill(warn.child.pid!, "SIGTERM");
      assert.equal((await warn.exited).code, 115, warn.err());
      await until("the hold to end", async () => (await mappingsOf(warn.child.pid!)).length === 0);
    } finally {
      killQuietly(warn.child);
      killQuietly(term.child);
    }
  });

  it("the session ended by an operator while PROGRAM runs: a warning, one --on-revoke signal, the pages held until exec exits", async () => {
    const e = startExec(b, [
      "sim1",
      "BAR4",
      "--length",
      "4K",
      "--on-revoke",
      "HUP",
      "--",
      POKE,
      "--wait",
      "--wait",
    ]);
    try {
      await until("PROGRAM to wait", () => e.out().includes("waiting\n") || e.child.exitCode !== null);
      const [m] = await mappingsOf(e.child.pid!);
      assert.ok(m, e.err());
      await admin.revokeSession({ sessionId: m.sessionId, reason: "tenant evicted" });
      await until("the warning", () => e.err().includes("the session with brokerd ended"));
      // PROGRAM got SIGHUP once (its second --wait still waits), and runs on; brokerd holds the pages.
      await until("PROGRAM to hear SIGHUP", () => /^signal 1 from pid \d+$/m.test(e.out()));
      assert.equal(e.out().match(/^signal /gm)?.length, 1, e.out());
      assert.match(e.out(), new RegExp(`^signal 1 from pid ${e.child.pid}$`, "m"));
      assert.equal(e.child.exitCode, null);
      const held = await mappingsOf(e.child.pid!);
      assert.deepEqual(
        held.map((x) => x.mapping?.state),
        [MappingState.REVOKING],
      );
      process.kill(e.child.pid!, "SIGTERM");
      assert.equal((await e.exited).code, 115, e.err());
      await until("the hold to end", async () => (await mappingsOf(e.child.pid!)).length === 0);
    } finally {
      killQuietly(e.child);
    }
  });

  it("PROGRAM's child inherits fd 3: exec releases when PROGRAM exits, though the child still maps it", async () => {
    // PROGRAM (sh) starts vfb-fd-poke in the background with fd 3 and exits at once.
    const script = `${POKE} --wait --write 0x80=0badf00d --read 0x80:4 & echo "child $!"`;
    const e = startExec(b, [
      "sim0",
      "BAR2",
      "--offset",
      "4M",
      "--length",
      "4K",
      "--",
      "/bin/sh",
      "-c",
      script,
    ]);
    let childPid: number | undefined;
    try {
      await until(
        "the background child to wait",
        () => /^child \d+$/m.test(e.out()) && e.out().includes("waiting\n"),
      );
      childPid = Number(/child (\d+)/.exec(e.out())![1]);
      assert.equal((await e.exited).code, 0, e.err());
      // exec waited only for PROGRAM: the grant is gone while the child still has the fd mapped.
      assert.deepEqual(await mappingsOf(e.child.pid!), []);
      assert.ok(readlinkSync(`/proc/${childPid}/fd/3`).length > 0, "the child still holds fd 3");
      process.kill(childPid, "SIGTERM");
      await until("the child's write", () => e.out().includes("0x80: 0badf00d\n"));
    } finally {
      killQuietly(e.child);
      killQuietly(childPid);
    }
  });

  it("exec's own fds never reach PROGRAM; exec killed with -9: brokerd frees the grant, PROGRAM keeps its mmap and writes through it", async () => {
    // PROGRAM waits for a signal, then writes through its mapping and reads the bytes back.
    const poke = [POKE, "--wait", "--write", "0x40=a1b2c3d4", "--read", "0x40:4"];
    const e = startExec(b, ["sim0", "BAR2", "--offset", "3M", "--length", "4K", "--", ...poke]);
    let programPid: number | undefined;
    try {
      await until("PROGRAM to wait", () => e.out().includes("waiting\n") || e.child.exitCode !== null);
      assert.equal((await mappingsOf(e.child.pid!)).length, 1, e.err());
      // PROGRAM is exec's only child process.
      const { stdout } = await run("/usr/bin/pgrep", ["-P", String(e.child.pid)]);
      programPid = Number(stdout.trim());
      assert.ok(programPid > 0, `no child of exec: ${stdout}`);
      // None of exec's own fds (its session socket among them) is open in PROGRAM: above 2, PROGRAM
      // has the backing and what exec inherited from this test, nothing else.
      const execFds = fdsOf(e.child.pid!);
      const sockets = [...execFds].filter(([n, t]) => n > 2 && t.startsWith("socket:"));
      assert.ok(sockets.length > 0, "exec holds its session's socket");
      for (const [n, t] of fdsOf(programPid)) {
        if (n <= 3) continue;
        assert.equal(t, inheritedHere(n), `PROGRAM's fd ${n} (${t}) is one of exec's`);
      }
      assert.ok(
        !sockets.some(([, t]) => [...fdsOf(programPid!).values()].includes(t)),
        "exec's session socket is open in PROGRAM",
      );
      e.child.kill("SIGKILL");
      await e.exited;
      await until("brokerd to free the grant", async () => (await mappingsOf(e.child.pid!)).length === 0);
      // Nothing stopped PROGRAM, and the kernel kept its mapping: after brokerd let the grant go it
      // still writes through it (what docs/security.md 2.1 says brokerd cannot prevent).
      process.kill(programPid, "SIGTERM");
      await until("PROGRAM's write", () => e.out().includes("0x40: a1b2c3d4\n"));
      assert.match(e.out(), new RegExp(`^signal 15 from pid ${process.pid}$`, "m"));
      assert.equal(await readBar2(b.socket, (3n << 20n) + 0x40n, 4), "a1b2c3d4");
    } finally {
      killQuietly(e.child);
      killQuietly(programPid);
    }
  });
});
