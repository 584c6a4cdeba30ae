// A second brokerd on the same runtime dir used to unlink the first one's broker.sock and
// admin.sock and then exit, leaving the first unreachable. Now it refuses to start (flock on
// DIR/brokerd.lock), says who holds the dir, and touches nothing; a SIGKILLed brokerd leaves no
// stale lock behind.
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { describe, it } from "node:test";
import { BrokerService, createClient } from "@vfio-broker/proto";
import { BROKERD, run, startBrokerd } from "../lib/brokerd.js";
import { report } from "./support/harness.js";

describe("hostile: one brokerd per runtime dir", () => {
  it("a second brokerd refuses and leaves the first one's sockets alone; a killed one leaves no lock", {
    timeout: 120_000,
  }, async () => {
    const first = await startBrokerd();
    let dirKept = false;
    try {
      const inodes = [first.socket, first.fdSocket, first.adminSocket].map((p) => statSync(p).ino);
      const second = await run(
        process.execPath,
        [BROKERD, "--runtime-dir", first.dir, "--policy", first.policyPath, "--metrics", "off"],
        { timeoutMs: 20_000 },
      );
      assert.notEqual(second.code, 0);
      assert.match(second.stderr, new RegExp(`another brokerd \\(pid ${first.pid}\\) is serving`));
      assert.deepEqual(
        [first.socket, first.fdSocket, first.adminSocket].map((p) => statSync(p).ino),
        inodes,
        "the sockets are the first brokerd's",
      );
      const c = createClient(BrokerService, `unix:${first.socket}`);
      const hello = await c.hello({}, { timeoutMs: 5000 });
      c.close();
      assert.ok(hello.sessionId);
      // kill -9: the kernel drops the lock; a new brokerd starts on the same dir.
      first.proc.kill("SIGKILL");
      await new Promise((r) => first.proc.once("exit", r));
      dirKept = true;
      const third = await startBrokerd({ dir: first.dir, policyText: "version: 1\nrules: []\n" });
      await third.stop();
      report("second brokerd", { exit: second.code, message: second.stderr.trim().split("\n").pop() });
    } finally {
      if (!dirKept) await first.stop();
    }
  });
});
