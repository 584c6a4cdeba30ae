// Leases: a client killed with SIGKILL while holding mappings loses them within a second, its
// cookies and pages are free again, and brokerd's own fd count returns to where it was.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Attribute, Prot } from "@vfio-broker/proto";
import { type BrokerProcess, NOBODY, REPO, startBrokerd, until } from "../lib/brokerd.js";
import { brokerClient } from "./agents/raw.js";

const AGENTS = join(REPO, "test/dist/e2e/agents");

describe("leases", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd();
  });
  after(async () => {
    await b?.stop();
  });

  it("SIGKILL of a client frees its mappings within 1 s and leaks no brokerd fd", async (t) => {
    // Warm up brokerd's lazy fds (e.g. first connection) before taking the baseline.
    const warm = brokerClient(b.socket);
    await warm.listDevices({});
    warm.close();
    await until("warm-up session gone", () => b.fdCount() > 0);
    await new Promise((r) => setTimeout(r, 200));
    const baseline = b.fdCount();

    const proc = spawn(
      process.execPath,
      [join(AGENTS, "holder.js"), b.socket, "2", "0", "65536", "WC", "fetch"],
      {
        stdio: ["pipe", "pipe", "inherit"],
        uid: NOBODY,
        gid: NOBODY,
      },
    );
    await new Promise<void>((resolve, reject) => {
      proc.stdout!.on("data", (d: Buffer) =>
        d.toString().includes('"ok":true') ? resolve() : reject(new Error(d.toString())),
      );
    });
    assert.ok(b.fdCount() > baseline, "the holder's session holds fds in brokerd");
    // While it lives, its WC pages refuse UC.
    const probe = brokerClient(b.socket);
    const df = await probe.openDevice({ deviceId: "sim0" });
    const uc = () =>
      probe.createMapping({
        deviceFileId: df.deviceFileId,
        regionIndex: 2,
        offset: 0n,
        length: 4096n,
        attribute: Attribute.UC,
        prot: Prot.READ,
      });
    await assert.rejects(uc(), /already mapped WC/);

    const t0 = Date.now();
    proc.kill("SIGKILL");
    await until(
      "the killed client's pages to be free",
      async () => {
        try {
          await uc();
          return true;
        } catch {
          return false;
        }
      },
      5000,
      10,
    );
    const freedMs = Date.now() - t0;
    t.diagnostic(`pages free ${freedMs} ms after SIGKILL`);
    assert.ok(freedMs < 1000, `freed after ${freedMs} ms`);
    probe.close();
    await until(`brokerd fd count back to ${baseline}`, () => b.fdCount() <= baseline, 5000);
    const j = (await import("node:fs")).readFileSync(b.journal, "utf8");
    assert.match(j, /"event":"session.end"[^\n]*"reason":"(process-exit|disconnect|lease-[a-z]+)"/);
  });
});
