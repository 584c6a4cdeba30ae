// Hostile: the state store's disk fills up (here a 512 KiB tmpfs; in life, anything else on /run).
// A grant whose record cannot be written is refused UNAVAILABLE and leaves nothing behind: no
// mapping, no fd in brokerd, for a single grant and for a whole FdBatch (mapMany, all or nothing).
// A record cut short by the full disk is cut back out of the log, so a brokerd started after a
// kill -9 still reads it, with every grant that was confirmed. Space back: grants work again.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { BrokerClientError, connect } from "@vfio-broker/client";
import { AdminService, createClient } from "@vfio-broker/proto";
import { startBrokerd, tempDir } from "../lib/brokerd.js";

const SIM = JSON.stringify([{ id: "sim0", regions: [{ index: 2, size: 1 << 20, prefetchable: true }] }]);

/** Fills the file system of `file` until it has no byte left. */
function fill(file: string): void {
  const fd = openSync(file, "w");
  try {
    for (const chunk of [Buffer.alloc(64 << 10), Buffer.alloc(1)])
      for (;;)
        try {
          writeSync(fd, chunk);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOSPC") break;
          throw e;
        }
  } finally {
    closeSync(fd);
  }
}

const unavailable = (e: unknown) => e instanceof BrokerClientError && e.code === "UNAVAILABLE";

describe("hostile: the state store's disk is full", () => {
  it("grants are refused with nothing left behind, the log stays readable, and space back means grants again", {
    timeout: 120_000,
  }, async () => {
    const dir = tempDir("vfio-broker-statefull-");
    // The state store is never inside the workload dir (brokerd refuses it): a place of its own.
    const stateHome = tempDir("vfio-broker-statefull-state-");
    const state = join(stateHome, "state");
    mkdirSync(state, { mode: 0o700 });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", state]);
    const simFile = join(dir, "sim.json");
    execFileSync("sh", ["-c", `printf '%s' '${SIM}' > ${simFile}`]);
    const args = ["--state-dir", state, "--sim-devices", simFile];
    let b = await startBrokerd({ dir, args });
    const c = await connect({ socket: b.socket });
    try {
      assert.equal(c.fdGrants, true);
      const df = await c.open("sim0");
      const admin = createClient(AdminService, `unix:${b.adminSocket}`);
      const held = async () => (await admin.listMappings({})).mappings.length;
      // (The fd-channel and admin connections are open before brokerd's fds are counted.)
      await (await df.map("BAR2", { offset: 250 * 4096, length: 4096 })).release();
      assert.equal(await held(), 0);
      fill(join(state, "filler"));
      const fds = b.fdCount();
      // The log's last page may still take a record or two; then a grant must be refused.
      const kept = [];
      let refusal: unknown;
      for (let i = 0; i < 64 && refusal === undefined; i++)
        await df.map("BAR2", { offset: i * 4096, length: 4096 }).then(
          (m) => kept.push(m),
          (e) => {
            refusal = e;
          },
        );
      assert.ok(unavailable(refusal), `expected UNAVAILABLE, got ${String(refusal)}`);
      assert.match((refusal as Error).message, /state store/i);
      assert.equal(await held(), kept.length, "a refused grant left a mapping behind");
      // A batch (16 records, more than any page's slack): refused as a whole, nothing kept.
      const batch = Array.from({ length: 16 }, (_, i) => ({
        region: "BAR2",
        offset: (100 + i) * 4096,
        length: 4096,
      }));
      await assert.rejects(df.mapMany(batch), unavailable);
      assert.equal(await held(), kept.length, "a refused batch left a mapping behind");
      assert.ok(b.fdCount() <= fds, `brokerd holds ${b.fdCount() - fds} fds more after the refusals`);
      // Space back: grants work again, and their records follow the refused ones in the log.
      rmSync(join(state, "filler"));
      const m = await df.map("BAR2", { offset: 200 * 4096, length: 4096 });
      // kill -9 now: the log must still read back (a record cut short by the full disk, with
      // records after it, would make it unreadable), with exactly what was confirmed.
      const exited = new Promise((r) => b.proc.once("exit", r));
      b.proc.kill("SIGKILL");
      await exited;
      admin.close();
      b = await startBrokerd({ dir, args });
      const admin2 = createClient(AdminService, `unix:${b.adminSocket}`);
      assert.equal((await admin2.listMappings({})).mappings.length, kept.length + 1);
      admin2.close();
      // The session resumed: grants work, singly and batched.
      const ms = await df.mapMany(batch);
      assert.equal(ms.length, 16);
      await m.release();
    } finally {
      await c.close().catch(() => {});
      await b.stop().catch(() => {});
      execFileSync("umount", ["-l", state]);
      rmSync(dir, { recursive: true, force: true });
      rmSync(stateHome, { recursive: true, force: true });
    }
  });
});
