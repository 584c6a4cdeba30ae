// SIGTERM (with --on-stop release) with leased clients: brokerd used to destroy every connection in the same tick, so 0/10
// clients heard why their mappings went away. Now each gets its "shutdown" revocation and
// LeaseEnded before the connection closes (bounded wait, about 1 s), and the CLI exits 3.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CLI, startBrokerd, until } from "../lib/brokerd.js";
import { ATTACKER, report, spawnAs } from "./support/harness.js";

describe("hostile: shutdown is announced", () => {
  it("10 leased CLI holders all receive the shutdown revocation and exit 3", {
    timeout: 120_000,
  }, async () => {
    // --on-stop release: SIGTERM ends every session (the default, keep, is in test/restart/).
    const b = await startBrokerd({ args: ["--on-stop", "release"] });
    try {
      const holders = Array.from({ length: 10 }, (_, i) =>
        spawnAs(
          ATTACKER,
          [
            CLI,
            "map",
            "sim0",
            "BAR2",
            "--offset",
            String(i * 4096),
            "--length",
            "4K",
            "--attr",
            "wc",
            "--hold",
          ],
          { ...process.env, VFIO_BROKER_SOCKET: b.socket },
        ),
      );
      await until("all 10 to hold their mapping", () => holders.every((h) => /cookie/.test(h.out())), 20_000);
      const t0 = Date.now();
      b.proc.kill("SIGTERM");
      const codes = await Promise.all(holders.map((h) => h.exited));
      const brokerdExit = await new Promise<number | null>((r) =>
        b.proc.exitCode !== null ? r(b.proc.exitCode) : b.proc.once("exit", (c) => r(c)),
      );
      const heard = holders.filter((h) => /revoked: shutdown/.test(h.out())).length;
      report("shutdown announced", {
        clients: 10,
        heardShutdown: heard,
        exitCodes: codes,
        brokerdExit,
        stopMs: Date.now() - t0,
      });
      assert.equal(heard, 10, holders.map((h) => h.out()).join("\n---\n"));
      assert.deepEqual(codes, Array(10).fill(3));
      assert.equal(brokerdExit, 0);
    } finally {
      await b.stop();
    }
  });
});
