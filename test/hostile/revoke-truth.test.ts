// Revocation tells the truth (issue 18 row 8). brokerd cannot take back a delivered mapping (a
// memfd here; sysfs resource files and the VFIO device fd likewise): a holder that ignores the
// revocation keeps writing through its mmap. brokerd used to release the pages at once and grant a
// UC mapping of them to another session while the WC holder still mapped them: the double booking
// the AttributeMap exists to prevent (x86 PAT). Now a revoked mapping stays booked (state
// "revoking") until its holder releases it or exits, on every path (operator, policy reload, drain,
// the holder's own session ending, a kill -9 of brokerd); an operator or the policy may enforce the
// revocation, and brokerd then kills the holder through its pidfd after the grace period.
import assert from "node:assert/strict";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { AdminService, Attribute, createClient, Layout, MappingState, Prot } from "@vfio-broker/proto";
import { brokerClient, codeOf } from "../e2e/agents/raw.js";
import { type BrokerProcess, startBrokerd, until } from "../lib/brokerd.js";
import { freePort, metric } from "./journal-support.js";
import { ATTACKER, assertAlive, report, type Spawned, spawnAs, suiteBrokerd } from "./support/harness.js";

const HOLDER = join(dirname(fileURLToPath(import.meta.url)), "agents", "revoke-holder.js");
const COOPERATIVE = join(dirname(fileURLToPath(import.meta.url)), "agents", "revoke-cooperative.js");

/** The workload rule (uid 65534) may change; the observer (the test, as root) keeps UC and WC. */
const policy = (attributes = "[UC, WC]", revoke = "") => `version: 1
rules:
  - name: workload
    match: { uids: [${ATTACKER}] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: ${attributes}
    prot: [r, rw]
${revoke}  - name: observer
    match: { uids: [0] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
`;

interface Holder extends Spawned {
  pid: number;
  deviceFileId: bigint;
  cookie: bigint;
}

/** uid 65534 maps sim0 BAR2 [offset, +4 KiB) WC and ignores revocations (agents/revoke-holder.ts). */
async function holder(b: BrokerProcess, offset: number, mode = "ignore", device = "sim0"): Promise<Holder> {
  const p = spawnAs(ATTACKER, [HOLDER, b.socket, String(offset), mode, device]);
  const line: string = await until(
    "the holder to map",
    () =>
      p
        .out()
        .split("\n")
        .find((l) => l.includes('"phase":"mapped"')) ?? "",
    20_000,
  ).catch((e: Error) => {
    throw new Error(`${e.message}\n${p.out()}\n${p.err()}`);
  });
  const m = JSON.parse(line) as { pid: number; deviceFileId: string; cookie: string };
  return { ...p, pid: m.pid, deviceFileId: BigInt(m.deviceFileId), cookie: BigInt(m.cookie) };
}

/** Another session (the test, as root): reads BAR2 through brokerd and asks for UC mappings. */
async function observer(b: BrokerProcess, deviceId = "sim0") {
  const rpc = brokerClient(b.socket);
  await rpc.hello({ clientName: "observer" });
  const df = await rpc.openDevice({ deviceId, layout: Layout.COMPACT });
  const bar2 = (await rpc.getRegionInfo({ deviceFileId: df.deviceFileId, regionIndex: 2 })).region!.cookie;
  return {
    rpc,
    /** The 32-bit word at BAR2 + offset, as the device holds it. */
    async read32(offset: number): Promise<number> {
      const r = await rpc.readRegion({
        deviceFileId: df.deviceFileId,
        offset: bar2 + BigInt(offset),
        length: 4,
      });
      return Buffer.from(r.data).readUInt32LE(0);
    },
    /** A UC CreateMapping of [offset, +length): "granted" (released again at once) or the refusal. */
    async uc(offset: number, length = 4096): Promise<{ result: string; message: string }> {
      try {
        const m = await rpc.createMapping({
          deviceFileId: df.deviceFileId,
          regionIndex: 2,
          offset: BigInt(offset),
          length: BigInt(length),
          attribute: Attribute.UC,
          prot: Prot.READ_WRITE,
        });
        await rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie: m.mapping!.cookie });
        return { result: "granted", message: "" };
      } catch (e) {
        return { result: codeOf(e), message: (e as Error).message };
      }
    },
  };
}

/** The holder keeps writing: its word, carrying its mark, changes between two reads. */
async function stillWrites(o: Awaited<ReturnType<typeof observer>>, offset: number): Promise<boolean> {
  // The holder writes its counter every 20 ms once it gets a CPU: its first write may not have
  // happened yet, and under load it may not run for a while, so two different counter values are
  // looked for every 100 ms for up to 10 s (no timing is asserted).
  let first: number | undefined;
  for (let i = 0; i < 100; i++) {
    const w = await o.read32(offset);
    if (w >>> 24 === 0x5a) {
      if (first === undefined) first = w;
      else if (w !== first) return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const HELD = /still held WC by a revoked mapping whose holder \(pid \d+, uid 65534\) has not unmapped it/;

/** Waits for the holder to exit (or timeoutMs); how it ended. */
async function exitOf(h: Spawned, timeoutMs: number): Promise<string> {
  const t = new Promise<string>((r) => setTimeout(() => r("still running"), timeoutMs));
  return Promise.race([h.exited.then(() => h.child.signalCode ?? `exit ${h.child.exitCode}`), t]);
}

const port = await freePort();

describe("hostile: revocation tells the truth", () => {
  const suite = suiteBrokerd({ policyText: policy(), args: ["--metrics", `127.0.0.1:${port}`] });
  const admin = () => createClient(AdminService, `unix:${suite.b.adminSocket}`);
  const setPolicy = async (text: string) => {
    writeFileSync(suite.b.policyPath, text);
    chmodSync(suite.b.policyPath, 0o644);
    const a = admin();
    try {
      return await a.reloadPolicy({});
    } finally {
      a.close();
    }
  };

  it("operator revoke: the holder keeps writing; a UC mapping of its pages is refused until it exits", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const off = 0x10000;
    const h = await holder(b, off);
    const o = await observer(b);
    const a = admin();
    try {
      const revoked = await a.revokeMapping({
        deviceFileId: h.deviceFileId,
        cookie: h.cookie,
        reason: "test",
      });
      const writes = await stillWrites(o, off);
      const listed = (await a.listMappings({})).mappings.find(
        (m) => m.mapping?.deviceFileId === h.deviceFileId && m.mapping.cookie === h.cookie,
      );
      const whileHeld = await o.uc(off);
      const revokingGauge = await metric(port, "vfio_broker_revoking_mappings");
      // Variants: a larger range over the held page, and one that only touches its last byte's page.
      const wider = await o.uc(0, 0x20000);
      const after = await o.uc(off + 4096);
      h.child.kill("SIGKILL");
      await h.exited;
      const freed = {
        result: await until("the pages to be free once the holder exited", async () =>
          (await o.uc(off)).result === "granted" ? "granted" : "",
        ).catch(() => "never"),
      };
      report("operator revoke, holder ignores it", {
        holderWritesAfterRevoke: writes,
        revokeCounts: revoked.revoked,
        listedState: listed ? MappingState[listed.mapping!.state] : "not listed",
        revocationKind: listed?.mapping?.revocation?.description ?? "",
        ucWhileHeld: whileHeld.result,
        ucWiderWhileHeld: wider.result,
        ucNextPage: after.result,
        ucAfterExit: freed.result,
        revokingMappingsGauge: revokingGauge,
        message: whileHeld.message,
      });
      assert.equal(writes, true, "the holder still writes through its mmap after the revocation");
      assert.equal(whileHeld.result, "FAILED_PRECONDITION", "no UC mapping of pages a WC holder still maps");
      assert.match(whileHeld.message, HELD);
      assert.equal(wider.result, "FAILED_PRECONDITION");
      assert.equal(after.result, "granted", "the page next to the held one is free");
      assert.equal(listed?.mapping?.state, MappingState.REVOKING);
      assert.equal(revoked.revoked?.mappingsHeld, 1);
      assert.equal(revokingGauge, 1, "vfio_broker_revoking_mappings counts it");
      assert.equal(freed.result, "granted", "the pages are free once the holder has exited");
      assert.equal(
        (await a.listMappings({})).mappings.some((m) => m.mapping?.state === MappingState.REVOKING),
        false,
      );
    } finally {
      h.child.kill("SIGKILL");
      o.rpc.close();
      a.close();
    }
    assertAlive(b);
  });

  it("a cooperative holder (the Node client) unmaps and releases: the pages are free while it lives on", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const off = 0x90000;
    const p = spawnAs(ATTACKER, [COOPERATIVE, b.socket, String(off)]);
    const o = await observer(b);
    const a = admin();
    try {
      const line: string = await until(
        "the cooperative holder to map",
        () =>
          p
            .out()
            .split("\n")
            .find((l) => l.includes('"phase":"mapped"')) ?? "",
        20_000,
      );
      const h = JSON.parse(line) as { deviceFileId: string; cookie: string };
      await a.revokeMapping({
        deviceFileId: BigInt(h.deviceFileId),
        cookie: BigInt(h.cookie),
        reason: "test",
      });
      await until("the revocation to reach the holder", () => p.out().includes('"phase":"revoked"'));
      const freed = await until("the pages to be free", async () =>
        (await o.uc(off)).result === "granted" ? "granted" : "",
      ).catch(() => "never");
      const alive = p.child.exitCode === null && p.child.signalCode === null;
      report("cooperative holder", {
        ucAfterRelease: freed,
        holderAlive: alive,
        holderOut: p.out().trim().split("\n").pop(),
      });
      assert.equal(freed, "granted", "the holder's ReleaseMapping frees the pages");
      assert.equal(alive, true, "without it exiting");
      assert.match(p.out(), /"unmapped":true/);
    } finally {
      p.child.kill("SIGKILL");
      o.rpc.close();
      a.close();
    }
  });

  it("operator revoke with enforce: the holder is killed after the grace period and the pages freed", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const off = 0x30000;
    const h = await holder(b, off);
    const o = await observer(b);
    const a = admin();
    try {
      const graceMs = 1000;
      const t0 = Date.now();
      await a.revokeMapping({
        deviceFileId: h.deviceFileId,
        cookie: h.cookie,
        reason: "enforced",
        enforce: true,
        graceMs,
      });
      const whileGrace = await o.uc(off);
      const how = await exitOf(h, graceMs + 15_000);
      const killedAfterMs = Date.now() - t0;
      const freed = {
        result: await until("the pages to be free once the holder exited", async () =>
          (await o.uc(off)).result === "granted" ? "granted" : "",
        ).catch(() => "never"),
      };
      const enforced = readFileSync(b.journal, "utf8")
        .split("\n")
        .filter((l) => l.includes('"event":"mapping.revoke.enforced"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((e) => e.pid === h.pid);
      const killedMetric = await metric(port, "vfio_broker_revocations_enforced_total", 'result="killed"');
      report("operator revoke with enforce", {
        graceMs,
        ucDuringGrace: whileGrace.result,
        holder: how,
        killedAfterMs,
        ucAfterKill: freed.result,
        journal: enforced ?? "none",
        metricKilled: killedMetric,
      });
      assert.equal(whileGrace.result, "FAILED_PRECONDITION");
      assert.equal(how, "SIGKILL", "brokerd killed the holder");
      assert.ok(
        killedAfterMs >= graceMs - 100,
        `killed after ${killedAfterMs} ms, not before the ${graceMs} ms grace`,
      );
      assert.equal(freed.result, "granted");
      assert.ok(enforced, "the journal has mapping.revoke.enforced for the holder's pid");
      assert.equal(enforced.uid, ATTACKER);
      assert.equal(enforced.result, "killed");
      assert.ok(killedMetric >= 1, "vfio_broker_revocations_enforced_total{result=killed} counts it");
    } finally {
      h.child.kill("SIGKILL");
      o.rpc.close();
      a.close();
    }
  });

  it("RevokeSession, drain, device removal and the holder's own session ending: the pages stay booked until it exits", {
    timeout: 180_000,
  }, async () => {
    const { b } = suite;
    const o = await observer(b);
    const a = admin();
    const figures: Record<string, unknown> = {};
    try {
      // RevokeSession.
      let h = await holder(b, 0x40000);
      const sid = (await a.listSessions({})).sessions.find((s) => s.identity?.pid === h.pid)!.sessionId;
      figures.revokeSession = (await a.revokeSession({ sessionId: sid, reason: "test" })).revoked;
      figures.ucAfterRevokeSession = (await o.uc(0x40000)).result;
      h.child.kill("SIGKILL");
      await h.exited;
      figures.ucAfterExit1 = await until("free", async () =>
        (await o.uc(0x40000)).result === "granted" ? "granted" : "",
      ).catch(() => "never");
      // Drain (then undrain: a drained device takes no new mappings at all).
      h = await holder(b, 0x50000);
      o.rpc.close();
      figures.drain = (await a.drainDevice({ deviceId: "sim0", reason: "test" })).revoked;
      await a.undrainDevice({ deviceId: "sim0" });
      const o2 = await observer(b);
      figures.holderWritesAfterDrain = await stillWrites(o2, 0x50000);
      figures.ucAfterDrain = (await o2.uc(0x50000)).result;
      h.child.kill("SIGKILL");
      await h.exited;
      figures.ucAfterExit2 = await until("free", async () =>
        (await o2.uc(0x50000)).result === "granted" ? "granted" : "",
      ).catch(() => "never");
      // The holder closes its own connection (its session ends) and keeps its mmap.
      h = await holder(b, 0x60000, "drop-session");
      await until("the holder's session to end", async () =>
        (await a.listSessions({})).sessions.every((s) => s.identity?.pid !== h.pid),
      );
      figures.ucAfterSessionEnd = (await o2.uc(0x60000)).result;
      h.child.kill("SIGKILL");
      await h.exited;
      figures.ucAfterExit3 = await until("free", async () =>
        (await o2.uc(0x60000)).result === "granted" ? "granted" : "",
      ).catch(() => "never");
      o2.rpc.close();
      // Device removal: the pages of a device that goes away stay booked under its id while a
      // holder may still map them (on real hardware the same BAR comes back at the same address).
      const size = 1n << 20n;
      await a.addSimDevice({ deviceId: "simr", regions: [{ index: 2, size, prefetchable: true }] });
      h = await holder(b, 0x1000, "ignore", "simr");
      const removed = (await a.removeSimDevice({ deviceId: "simr" })).revoked;
      await a.addSimDevice({ deviceId: "simr", regions: [{ index: 2, size, prefetchable: true }] });
      const o3 = await observer(b, "simr");
      const ucAfterDeviceGone = (await o3.uc(0x1000)).result;
      h.child.kill("SIGKILL");
      await h.exited;
      const ucAfterExit4 = await until("free", async () =>
        (await o3.uc(0x1000)).result === "granted" ? "granted" : "",
      ).catch(() => "never");
      o3.rpc.close();
      await a.removeSimDevice({ deviceId: "simr" });
      report("device removal", { removed, ucAfterDeviceGone, ucAfterExit4 });
      report("revoke session, drain, session end", figures);
      assert.equal(figures.ucAfterRevokeSession, "FAILED_PRECONDITION");
      assert.equal(figures.ucAfterDrain, "FAILED_PRECONDITION");
      assert.equal(figures.holderWritesAfterDrain, true);
      assert.equal(figures.ucAfterSessionEnd, "FAILED_PRECONDITION");
      for (const k of ["ucAfterExit1", "ucAfterExit2", "ucAfterExit3"])
        assert.equal(figures[k], "granted", k);
      assert.equal(ucAfterDeviceGone, "FAILED_PRECONDITION");
      assert.equal(ucAfterExit4, "granted");
    } finally {
      o.rpc.close();
      a.close();
    }
  });

  it("policy reload: the revoked WC holder keeps its pages booked; the rule's revoke.enforce kills it", {
    timeout: 120_000,
  }, async () => {
    const { b } = suite;
    const o = await observer(b);
    const figures: Record<string, unknown> = {};
    try {
      // Without enforcement: held until the holder exits.
      let h = await holder(b, 0x70000);
      figures.reload1 = (await setPolicy(policy("[UC]"))).ok;
      const refused = await o.uc(0x70000);
      figures.ucAfterReload = refused.result;
      figures.message = refused.message;
      figures.holderWritesAfterReload = await stillWrites(o, 0x70000);
      h.child.kill("SIGKILL");
      await h.exited;
      figures.ucAfterExit = await until("free", async () =>
        (await o.uc(0x70000)).result === "granted" ? "granted" : "",
      ).catch(() => "never");
      // With the rule's enforcement: the reload's revocation kills the holder after graceMs.
      const enforce = "    revoke: { enforce: kill, graceMs: 500 }\n";
      figures.reload2 = (await setPolicy(policy("[UC, WC]", enforce))).ok;
      if (figures.reload2) {
        h = await holder(b, 0x80000);
        figures.reload3 = (await setPolicy(policy("[UC]", enforce))).ok;
        figures.holder = await exitOf(h, 15_000);
        figures.ucAfterKill = await until("free", async () =>
          (await o.uc(0x80000)).result === "granted" ? "granted" : "",
        ).catch(() => "never");
        h.child.kill("SIGKILL");
      }
      report("policy reload", figures);
      assert.equal(figures.ucAfterReload, "FAILED_PRECONDITION");
      assert.match(refused.message, HELD);
      assert.match(refused.message, /reason policy/);
      assert.equal(figures.holderWritesAfterReload, true);
      assert.equal(figures.ucAfterExit, "granted");
      assert.equal(figures.reload2, true, "a rule may say revoke: { enforce: kill, graceMs }");
      assert.equal(figures.holder, "SIGKILL");
      assert.equal(figures.ucAfterKill, "granted");
    } finally {
      o.rpc.close();
      await setPolicy(policy());
    }
  });
});

describe("hostile: a revoked mapping's booking survives brokerd's end", () => {
  it("--on-stop release: the shutdown revokes, the next brokerd keeps the pages booked until the holder exits", {
    timeout: 120_000,
  }, async () => {
    let b = await startBrokerd({ policyText: policy(), args: ["--on-stop", "release"] });
    let h: Holder | undefined;
    const figures: Record<string, unknown> = {};
    try {
      h = await holder(b, 0x20000);
      const exited = new Promise((r) => b.proc.once("exit", r));
      b.proc.kill("SIGTERM");
      await exited;
      b = await startBrokerd({ dir: b.dir, policyText: policy() });
      const o = await observer(b);
      const r = await o.uc(0x20000);
      figures.ucAfterRestart = r.result;
      figures.holderWritesAfterRestart = await stillWrites(o, 0x20000);
      h.child.kill("SIGKILL");
      await h.exited;
      figures.ucAfterExit = await until("free", async () =>
        (await o.uc(0x20000)).result === "granted" ? "granted" : "",
      ).catch(() => "never");
      o.rpc.close();
      report("--on-stop release keeps the hold", figures);
      assert.equal(r.result, "FAILED_PRECONDITION");
      assert.match(r.message, /reason shutdown/);
      assert.equal(figures.ucAfterExit, "granted");
    } finally {
      h?.child.kill("SIGKILL");
      await b.stop();
    }
  });

  it("revoke, kill -9, restart: the UC mapping is still refused until the holder exits", {
    timeout: 120_000,
  }, async () => {
    let b = await startBrokerd({ policyText: policy() });
    let h: Holder | undefined;
    const figures: Record<string, unknown> = {};
    try {
      h = await holder(b, 0x10000);
      const a = createClient(AdminService, `unix:${b.adminSocket}`);
      await a.revokeMapping({ deviceFileId: h.deviceFileId, cookie: h.cookie, reason: "test" });
      a.close();
      b.proc.kill("SIGKILL");
      await new Promise((r) => b.proc.once("exit", r));
      b = await startBrokerd({ dir: b.dir, policyText: policy() });
      const o = await observer(b);
      figures.ucAfterRestart = await o.uc(0x10000);
      figures.holderWritesAfterRestart = await stillWrites(o, 0x10000);
      h.child.kill("SIGKILL");
      await h.exited;
      figures.ucAfterExit = await until("free", async () =>
        (await o.uc(0x10000)).result === "granted" ? "granted" : "",
      ).catch(() => "never");
      o.rpc.close();
      report("kill -9 keeps the hold", figures);
      assert.equal((figures.ucAfterRestart as { result: string }).result, "FAILED_PRECONDITION");
      assert.match((figures.ucAfterRestart as { message: string }).message, HELD);
      assert.equal(figures.ucAfterExit, "granted");
    } finally {
      h?.child.kill("SIGKILL");
      await b.stop();
    }
  });
});
