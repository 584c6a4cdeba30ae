// The Node client on its default transport (the workload protocol) hears its events as it did on a
// gRPC Lease: a drain's device health, then the revocation (the mapping unmapped before any
// listener runs, and released at brokerd afterwards), and an operator's end of the session as
// leaseLost with every mapping unmapped; and a client that only maps holds one session, no gRPC one.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  connect,
  type DeviceHealthEvent,
  type LeaseLostEvent,
  type RevocationEvent,
} from "@vfio-broker/client";
import { AdminService, createClient } from "@vfio-broker/proto";
import { type BrokerProcess, startBrokerd, until } from "../lib/brokerd.js";

describe("the Node client's events on the workload protocol", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd();
  });
  after(async () => {
    await b?.stop();
  });

  it("a drain: device health, then the revocation, unmapped first and released at brokerd", async () => {
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const c = await connect({ socket: b.socket, clientName: "node-wl-events" });
    try {
      assert.equal(c.transport, "workload");
      const df = await c.open("sim1");
      const m = await df.map("BAR4", { length: 8192n, attr: "wc" });
      m.write32(0, 0x1234);
      const mine = async () =>
        (await admin.listSessions({})).sessions.filter((s) => s.identity?.pid === process.pid);
      // One session: the workload connection (no gRPC side session for a client that only maps).
      assert.deepEqual(
        (await mine()).map((s) => [s.clientName, s.mappings]),
        [["node-wl-events", 1]],
      );
      const health: DeviceHealthEvent[] = [];
      const revoked: { e: RevocationEvent; unmapped: boolean }[] = [];
      c.on("deviceHealth", (e) => health.push(e));
      c.on("revocation", (e) => revoked.push({ e, unmapped: m.revoked }));
      await admin.drainDevice({ deviceId: "sim1", reason: "maintenance window" });
      await until("the revocation", () => revoked.length > 0);
      assert.deepEqual(health, [{ deviceId: "sim1", health: "draining" }]);
      const r = revoked[0]!;
      assert.equal(r.unmapped, true, "unmapped before the listener ran");
      assert.equal(r.e.reason, "device-drain");
      assert.equal(r.e.message, "maintenance window");
      assert.equal(r.e.deviceFileId, df.id);
      assert.deepEqual(r.e.mappings, [m]);
      assert.throws(() => m.read32(0), /revoked|device-drain/);
      // The client told brokerd it unmapped: nothing of it stays booked.
      await until("brokerd to hold nothing of the client", async () =>
        (await mine()).every((s) => s.mappings === 0 && s.deviceFiles === 0) ? true : undefined,
      );
      await admin.undrainDevice({ deviceId: "sim1" });
      const df2 = await c.open("sim1");
      await (await df2.map("BAR4", { length: 4096n, attr: "wc" })).release();
    } finally {
      await c.close();
      admin.close();
    }
  });

  it("an operator ends the session: leaseLost, every mapping unmapped, calls refused", async () => {
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const c = await connect({ socket: b.socket, clientName: "node-wl-revoked" });
    try {
      const df = await c.open("sim0");
      const m = await df.map("BAR2", { length: 4096n, attr: "wc" });
      // brokerd revokes what the session holds (a revocation each), then ends it (leaseLost).
      const unmapped: unknown[] = [];
      c.on("revocation", (e) => unmapped.push(...e.mappings));
      const lost = new Promise<LeaseLostEvent>((r) => c.on("leaseLost", r));
      await admin.revokeSession({ sessionId: c.sessionId, reason: "tenant evicted" });
      const e = await lost;
      assert.deepEqual([...unmapped, ...e.mappings], [m]);
      assert.equal(m.revoked, true);
      assert.match(e.error?.message ?? "", /tenant evicted|revoked/);
      assert.equal(c.leaseActive, false);
      await assert.rejects(c.open("sim0"), /session has ended/);
    } finally {
      await c.close();
      admin.close();
    }
  });
});
