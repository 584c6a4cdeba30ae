// Restarts end to end (issue 10), brokerd as its own process on a state directory that outlives it:
//   - SIGTERM keeps grants (the default --on-stop keep): a holding CLI hears "restart", resumes
//     with the next brokerd, keeps its mapping and hears no revocation;
//   - sim BAR bytes survive kill -9, and device-file ids continue across runs;
//   - a damaged state store stops the start, naming the file and what to do;
//   - reconcile and resume with 10k recorded mappings (timed by brokerd itself; printed).
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { tokenHash } from "@vfio-broker/brokerd/broker";
import { DEFAULT_SIM_DEVICES, SimBackend } from "@vfio-broker/brokerd/devices/sim";
import { DeviceFile } from "@vfio-broker/brokerd/grants/device-file";
import { processStartTime } from "@vfio-broker/brokerd/identity/peer";
import { encodeRecord, type StateRecord } from "@vfio-broker/brokerd/state/records";
import { connect } from "@vfio-broker/client";
import { AdminService, createClient } from "@vfio-broker/proto";
import { brokerClient } from "../e2e/agents/raw.js";
import { spawnAs } from "../hostile/support/harness.js";
import { BROKERD, type BrokerProcess, CLI, REPO, run, startBrokerd, tempDir, until } from "../lib/brokerd.js";
import { killAndRestart, report } from "./support/fleet.js";

const journalEvents = (b: BrokerProcess, event: string) =>
  readFileSync(b.journal, "utf8")
    .split("\n")
    .filter((l) => l.includes(`"event":"${event}"`))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

async function sigterm(b: BrokerProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => b.proc.once("exit", (c) => r(c)));
  b.proc.kill("SIGTERM");
  return exited;
}

describe("restart", () => {
  it("SIGTERM keeps grants: a holding CLI resumes with the next brokerd and is never revoked", {
    timeout: 120_000,
  }, async () => {
    let b = await startBrokerd();
    const holder = spawnAs(65534, [CLI, "map", "sim0", "BAR2", "--length", "4K", "--attr", "wc", "--hold"], {
      ...process.env,
      VFIO_BROKER_SOCKET: b.socket,
    });
    try {
      await until("the CLI to hold its mapping", () => /cookie/.test(holder.out()), 20_000);
      assert.equal(await sigterm(b), 0, "brokerd exits 0");
      b = await startBrokerd({ dir: b.dir });
      await until("the CLI to resume", () => /resumed after a brokerd restart/.test(holder.out()), 30_000);
      assert.equal(holder.child.exitCode, null, `the CLI still holds:\n${holder.out()}\n${holder.err()}`);
      assert.doesNotMatch(holder.out(), /revoked/);
      const stop = journalEvents(b, "daemon.stop").at(-1);
      assert.match(String(stop?.reason), /grants kept/);
      assert.equal(journalEvents(b, "session.resume").length, 1);
      holder.child.kill("SIGTERM");
      assert.equal(await holder.exited, 0);
    } finally {
      holder.child.kill("SIGKILL");
      await b.stop();
    }
  });

  it("sim BAR bytes survive kill -9; device-file ids continue across runs", { timeout: 60_000 }, async () => {
    let b = await startBrokerd();
    try {
      const pattern = Buffer.from("bytes written before the kill\n");
      const c1 = await connect({ socket: b.socket, autoResume: false });
      const df1 = await c1.open("sim1");
      const bar4 = df1.region("BAR4");
      for (let off = 0; off < pattern.length; off += 4)
        await df1.write(bar4.cookie + BigInt(off), pattern.subarray(off, off + 4));
      const firstId = df1.id;
      c1.rpc.close();
      b = await killAndRestart(b);
      const c2 = await connect({ socket: b.socket });
      const df2 = await c2.open("sim1");
      assert.ok(df2.id > firstId, `device-file id ${df2.id} comes after ${firstId} of the previous run`);
      const back = await df2.read(df2.region("BAR4").cookie, pattern.length);
      assert.equal(back.toString(), pattern.toString());
      await c2.close();
    } finally {
      await b.stop();
    }
  });

  it("a damaged state store stops the start and says which file and what to do", {
    timeout: 60_000,
  }, async () => {
    const b = await startBrokerd();
    try {
      const c = await connect({ socket: b.socket, autoResume: false });
      await c.open("sim0");
      const exited = new Promise((r) => b.proc.once("exit", r));
      b.proc.kill("SIGKILL");
      await exited;
      const log = join(b.stateDir, "state.0.log");
      const lines = readFileSync(log, "utf8").split("\n");
      lines[1] = lines[1]!.replace('"uid":', '"uid":1');
      writeFileSync(log, lines.join("\n"));
      const r = await run(process.execPath, [
        BROKERD,
        "--runtime-dir",
        b.dir,
        "--policy",
        b.policyPath,
        "--metrics",
        "off",
      ]);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        new RegExp(`${log.replaceAll("/", "\\/")} is unusable: line 2: CRC-32 mismatch`),
      );
      assert.match(r.stderr, /will not start from a partial view/);
      assert.match(r.stderr, /move the state directory aside/);
      c.rpc.close();
    } finally {
      await b.stop();
    }
  });

  it("a junk, live or foreign resume token resumes nothing; --take-over with nobody to take over says so", {
    timeout: 60_000,
  }, async () => {
    let b = await startBrokerd();
    // A session of another process (uid 65534) that outlives the brokerd below.
    const raw = join(REPO, "test/dist/e2e/agents/raw.js");
    const other = spawnAs(
      65534,
      [
        "--input-type=module",
        "-e",
        `import { brokerClient } from ${JSON.stringify(raw)}; const h = await brokerClient(${JSON.stringify(b.socket)}).hello({}); console.log(JSON.stringify({ token: h.resumeToken, session: h.sessionId })); setInterval(() => {}, 1e6);`,
      ],
      process.env,
    );
    try {
      const { token, session } = JSON.parse(
        await until("the other process's token", () => other.out().split("\n")[0] ?? "", 20_000),
      ) as { token: string; session: string };
      const mine = brokerClient(b.socket);
      // Not a token at all (32 lower-case hex digits): refused, naming the field.
      await assert.rejects(brokerClient(b.socket).hello({ resumeToken: "not-a-token" }), {
        code: 3,
        details: /HelloRequest\.resume_token holds "n" at offset 0/,
      });
      // A token that names nothing: a fresh session, nothing resumed.
      const junk = await mine.hello({ resumeToken: "0123456789abcdef0123456789abcdef" });
      assert.equal(junk.resumed, false);
      assert.match(junk.resumeToken, /^[0-9a-f]{32}$/);
      // The other process's session is attached here: nothing to resume, whoever asks.
      const live = await brokerClient(b.socket).hello({ resumeToken: token });
      assert.equal(live.resumed, false);
      assert.notEqual(live.sessionId, session);
      mine.close();
      // After a restart it waits, detached, for its own process; this one (another pid) gets nothing.
      b = await killAndRestart(b);
      const thief = brokerClient(b.socket);
      const stolen = await thief.hello({ resumeToken: token });
      assert.equal(stolen.resumed, false);
      assert.equal(stolen.held.length, 0);
      const a = createClient(AdminService, `unix:${b.adminSocket}`);
      const ids = (await a.listSessions({})).sessions.map((s) => s.sessionId);
      a.close();
      thief.close();
      assert.ok(ids.includes(session), "the other process's session is still there, unresumed");
      // A take-over with no brokerd offering one: exit 1, and the reason, with no stack trace.
      const dir = tempDir("vfio-broker-takeover-");
      const r = await run(process.execPath, [
        BROKERD,
        "--runtime-dir",
        dir,
        "--policy",
        b.policyPath,
        "--metrics",
        "off",
        "--take-over",
      ]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /no brokerd to take over from at .*handover\.sock/);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    } finally {
      other.child.kill("SIGKILL");
      await b.stop();
    }
  });

  it("a Hello with the resume token sent again on the connection that resumed it: still resumed", {
    timeout: 60_000,
  }, async () => {
    // What the Node client does when its first Hello's reply came after its 2 s timeout (a
    // loaded machine): the same Hello again, on the same channel. It must not lose the session.
    let b = await startBrokerd();
    const raw = join(REPO, "test/dist/e2e/agents/raw.js");
    const proc = spawnAs(
      65534,
      [
        "--input-type=module",
        "-e",
        `import { brokerClient } from ${JSON.stringify(raw)};
         const sock = ${JSON.stringify(b.socket)};
         const h = await brokerClient(sock).hello({});
         console.log(JSON.stringify({ token: h.resumeToken, session: h.sessionId }));
         process.on("SIGUSR1", async () => {
           const c = brokerClient(sock);
           const r1 = await c.hello({ resumeToken: h.resumeToken });
           const r2 = await c.hello({ resumeToken: h.resumeToken });
           console.log(JSON.stringify({ r1: [r1.resumed, r1.sessionId], r2: [r2.resumed, r2.sessionId] }));
         });
         setInterval(() => {}, 1e6);`,
      ],
      process.env,
    );
    try {
      const { session } = JSON.parse(
        await until("the token", () => proc.out().split("\n")[0] ?? "", 20_000),
      ) as { session: string };
      b = await killAndRestart(b);
      proc.child.kill("SIGUSR1");
      const line = await until("both Hellos", () => proc.out().split("\n")[1] ?? "", 20_000);
      const { r1, r2 } = JSON.parse(line) as { r1: [boolean, string]; r2: [boolean, string] };
      assert.deepEqual(r1, [true, session]);
      assert.deepEqual(r2, [true, session], "the repeated Hello keeps the session");
    } finally {
      proc.child.kill("SIGKILL");
      await b.stop();
    }
  });

  it("reconcile and resume with 10k recorded mappings", { timeout: 120_000 }, async () => {
    // A state store as a killed brokerd would leave it: this test process holds 10k mappings of
    // sim0 BAR2 WC over 10 device files (delivered, so nothing needs reopening).
    let b = await startBrokerd();
    const dir = b.dir;
    const stateDir = b.stateDir;
    const exited = new Promise((r) => b.proc.once("exit", r));
    b.proc.kill("SIGKILL");
    await exited;
    const token = "ab".repeat(16);
    const page = 4096n;
    const info = new SimBackend(DEFAULT_SIM_DEVICES).devices().find((d) => d.id === "sim0")!;
    const recs: StateRecord[] = [
      {
        t: "session.open",
        s: {
          id: "5e55105e55105e55",
          tokenHash: tokenHash(token),
          uid: process.getuid!(),
          gid: process.getgid!(),
          pid: process.pid,
          startTime: processStartTime(process.pid),
          cgroup: "",
          groups: [],
          pidfdSource: "pidfd_open",
          clientName: "synthetic",
          openedAt: Date.now(),
        },
      },
    ];
    for (let f = 0; f < 10; f++) {
      const id = 1000 + f;
      recs.push({
        t: "df.open",
        d: {
          id: String(id),
          session: "5e55105e55105e55",
          device: "sim0",
          layout: "compact",
          openedAt: 0,
          requestId: "",
        },
      });
      const base = new DeviceFile(BigInt(id), "s", info, "compact", page).aliasBase;
      for (let k = 0n; k < 1000n; k++)
        recs.push({
          t: "map.create",
          m: {
            df: String(id),
            cookie: String(base + k * page),
            region: 2,
            offset: String(k * page),
            length: String(page),
            requested: "WC",
            effective: "WC",
            fallbackReason: "",
            prot: "rw",
            kind: "memfd",
            state: "delivered",
            ticket: "",
            expiresAt: 0,
            rule: "sim-any-local",
            requestId: "",
            createdAt: 0,
          },
        });
    }
    writeFileSync(join(stateDir, "state.0.log"), recs.map(encodeRecord).join(""), { flag: "a" });
    b = await startBrokerd({ dir });
    try {
      const start = journalEvents(b, "daemon.start").at(-1)!;
      assert.equal(start.restored, 1);
      const rpc = brokerClient(b.socket);
      const t0 = performance.now();
      const hello = await rpc.hello({ clientName: "synthetic", resumeToken: token });
      const resumeMs = performance.now() - t0;
      assert.equal(hello.resumed, true);
      assert.equal(
        hello.held.reduce((n, h) => n + h.cookies.length, 0),
        10_000,
      );
      rpc.close();
      report("reconcile 10k mappings", {
        reconcileMs: start.reconcileMs,
        resumeHelloMs: Math.round(resumeMs),
      });
    } finally {
      await b.stop();
    }
  });
});
