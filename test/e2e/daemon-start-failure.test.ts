// A start that fails part-way ends brokerd at once, with a message that says what to do, and leaves
// nothing held: no socket file it bound, the runtime lock free (a start on the same directories
// succeeds once the cause is fixed), and another server on a socket brokerd wanted untouched. The
// same failures in one process, counting its fds: services/brokerd/src/daemon/start.test.ts.
import assert from "node:assert/strict";
import {
  chmodSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  brokerdArgs,
  privateDirOf,
  type RunResult,
  run,
  SIM_POLICY,
  startBrokerd,
  tempDir,
} from "../lib/brokerd.js";

/** A workload dir and its private dir with the sim policy, as startBrokerd lays them out. */
function place() {
  const dir = tempDir("vfio-broker-startfail-");
  const privateDir = privateDirOf(dir);
  mkdirSync(privateDir, { mode: 0o700, recursive: true });
  const policyPath = join(privateDir, "policy.yaml");
  writeFileSync(policyPath, readFileSync(SIM_POLICY));
  chmodSync(policyPath, 0o644);
  const journal = join(privateDir, "journal.jsonl");
  return {
    dir,
    privateDir,
    stateDir: join(privateDir, "state"),
    /** Runs brokerd on these dirs to its exit (killed, and so failing, if it lingers 20 s). */
    start: (): Promise<RunResult> =>
      run(process.execPath, brokerdArgs(dir, policyPath, journal), { timeoutMs: 20_000 }),
    clean: () => {
      rmSync(dir, { recursive: true, force: true });
      rmSync(privateDir, { recursive: true, force: true });
    },
  };
}

/** Another program's server on `path`: it answers "other" to every connection. */
async function otherServer(path: string): Promise<Server> {
  const s = createServer((c) => {
    c.on("error", () => {}); // brokerd's liveness probe connects and resets
    c.end("other\n");
  });
  await new Promise<void>((r) => s.listen(path, r));
  return s;
}

function ask(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(path);
    let got = "";
    c.on("data", (b) => {
      got += b.toString();
    });
    c.on("end", () => resolve(got));
    c.on("error", reject);
  });
}

/** brokerd ended by itself, non-zero, saying `message`. */
function refused(r: RunResult, message: RegExp): void {
  assert.equal(r.signal, null, `brokerd did not exit by itself:\n${r.stderr}`);
  assert.notEqual(r.code, 0, r.stderr);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /\n\s+at /, "an operator's message, not a stack trace");
}

describe("a failed start leaves nothing held", { timeout: 120_000 }, () => {
  it("a damaged state store: exit 1 with what to do; no socket; once moved aside the start succeeds", async () => {
    const p = place();
    try {
      mkdirSync(p.stateDir, { mode: 0o700 });
      writeFileSync(join(p.stateDir, "state.snap"), "not a state store\n", { mode: 0o600 });
      const r = await p.start();
      refused(r, /the state store .*state\.snap is unusable: .*move the state directory aside/s);
      assert.deepEqual(readdirSync(p.dir), [], "no socket in the workload dir");
      assert.deepEqual(
        readdirSync(p.privateDir).filter((f) => f.endsWith(".sock")),
        [],
        "no private socket",
      );
      renameSync(p.stateDir, `${p.stateDir}.bad`);
      const b = await startBrokerd({ dir: p.dir });
      await b.stop();
    } finally {
      p.clean();
    }
  });

  for (const [name, where] of [
    ["broker.sock", "dir"],
    ["admin.sock", "privateDir"],
  ] as const)
    it(`${name} bound by another server: refused with why; it is untouched, nothing of brokerd's is left`, async () => {
      const p = place();
      const path = join(p[where], name);
      const other = await otherServer(path);
      let stopped = false;
      try {
        const ino = statSync(path).ino;
        const r = await p.start();
        refused(r, new RegExp(`another server is accepting on ${path.replace(/[.]/g, "\\.")}`));
        assert.equal(statSync(path).ino, ino, "the other server's socket file is the same");
        assert.equal(await ask(path), "other\n", "the other server still answers");
        // Nothing brokerd bound before it found the socket taken (broker.sock is bound first).
        const left = (d: string) => readdirSync(d).filter((f) => f.endsWith(".sock") && join(d, f) !== path);
        assert.deepEqual(left(p.dir), [], "no brokerd socket in the workload dir");
        assert.deepEqual(left(p.privateDir), [], "no brokerd socket in the private dir");
        await new Promise<void>((r) => other.close(() => r()));
        stopped = true;
        // The lock is free: the next start on the same directories serves.
        const b = await startBrokerd({ dir: p.dir });
        await b.stop();
      } finally {
        if (!stopped) other.close();
        p.clean();
      }
    });
});
