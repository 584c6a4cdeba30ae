// The rest of the BrokerService surface, each call as a client sees it: Hello (identity and
// capabilities), GetDevice, SetMappingAttribute before and after delivery, CloseDevice, the
// standard grpc.health.v1 service, and the events a Lease carries (device health, revocations).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  AdminService,
  Attribute,
  BackingKind,
  createClient,
  DeviceHealth,
  Health,
  HealthCheckResponse_ServingStatus,
  type LeaseResponse,
  Prot,
} from "@vfio-broker/proto";
import { type BrokerProcess, startBrokerd, until } from "../lib/brokerd.js";
import { brokerClient, present } from "./agents/raw.js";

describe("BrokerService API", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd();
  });
  after(async () => {
    await b?.stop();
  });

  it("Hello reports the kernel's identity of the caller and what this host can give", async () => {
    const c = brokerClient(b.socket);
    try {
      const h = await c.hello({ clientName: "api-test" });
      assert.equal(h.identity!.uid, process.getuid!());
      assert.equal(h.identity!.pid, process.pid);
      assert.equal(h.identity!.pidfdSource, "SO_PEERPIDFD");
      assert.equal(h.apiVersion, "vfiobroker.v1");
      const caps = h.capabilities!;
      assert.equal(caps.fdSocketPath, b.fdSocket);
      assert.equal(caps.pageSize, 4096);
      assert.equal(caps.ticketTtlMs, 10_000);
      assert.deepEqual([...caps.attributes].sort(), [Attribute.UC, Attribute.WC, Attribute.WB]);
      assert.deepEqual(caps.backings, [BackingKind.MEMFD]);
      assert.equal(caps.maxFdsPerMessage, 253);
      const d = await c.getDevice({ deviceId: "sim1" });
      assert.deepEqual(
        d.device!.regions.map((r) => [r.name, r.size, r.prefetchable]),
        [
          ["BAR0", 16384n, false],
          ["BAR4", 4194304n, true],
          ["CONFIG", 4096n, false],
        ],
      );
    } finally {
      c.close();
    }
  });

  it("SetMappingAttribute changes a pending mapping; after delivery it is FAILED_PRECONDITION", async () => {
    const c = brokerClient(b.socket);
    try {
      const df = await c.openDevice({ deviceId: "sim0" });
      const r = await c.createMapping({
        deviceFileId: df.deviceFileId,
        regionIndex: 2,
        offset: 0x100000n,
        length: 4096n,
        attribute: Attribute.WC,
        prot: Prot.READ_WRITE,
      });
      const changed = await c.setMappingAttribute({
        deviceFileId: df.deviceFileId,
        cookie: r.mapping!.cookie,
        attribute: Attribute.UC,
      });
      assert.equal(changed.mapping!.effectiveAttribute, Attribute.UC);
      // The page is now UC: a WC mapping of it elsewhere conflicts.
      await assert.rejects(
        c.createMapping({
          deviceFileId: df.deviceFileId,
          regionIndex: 2,
          offset: 0x100000n,
          length: 4096n,
          attribute: Attribute.WC,
          prot: Prot.READ,
        }),
        /already mapped UC/,
      );
      // Same process as CreateMapping: this test process presents its own ticket.
      const got = await present(b.fdSocket, r.ticket);
      assert.equal(got.status, "OK");
      assert.equal(got.fds, 1);
      await assert.rejects(
        c.setMappingAttribute({
          deviceFileId: df.deviceFileId,
          cookie: r.mapping!.cookie,
          attribute: Attribute.WC,
        }),
        /FAILED_PRECONDITION: mapping \d+ was already delivered with UC/,
      );
      // CloseDevice releases everything in the device file.
      await c.createMapping({
        deviceFileId: df.deviceFileId,
        regionIndex: 0,
        offset: 0n,
        length: 4096n,
        attribute: Attribute.UC,
        prot: Prot.READ,
      });
      const closed = await c.closeDevice({ deviceFileId: df.deviceFileId });
      assert.equal(closed.mappingsReleased, 2);
      await assert.rejects(c.closeDevice({ deviceFileId: df.deviceFileId }), /NOT_FOUND/);
    } finally {
      c.close();
    }
  });

  it("grpc.health.v1: SERVING for brokerd and its services, NOT_FOUND for others", async () => {
    const h = createClient(Health, `unix:${b.socket}`);
    try {
      assert.equal((await h.check({ service: "" })).status, HealthCheckResponse_ServingStatus.SERVING);
      assert.equal(
        (await h.check({ service: "vfiobroker.v1.BrokerService" })).status,
        HealthCheckResponse_ServingStatus.SERVING,
      );
      await assert.rejects(h.check({ service: "nope" }), /NOT_FOUND/);
    } finally {
      h.close();
    }
  });

  it("the lease carries a drain: device health, then the revocation of the device file", async () => {
    const c = brokerClient(b.socket);
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const events: LeaseResponse[] = [];
    try {
      const lease = c.lease();
      lease.call.on("data", (e: LeaseResponse) => events.push(e));
      lease.call.on("error", () => {});
      await until("the lease grant", () => events.some((e) => e.kind.case === "granted"));
      const df = await c.openDevice({ deviceId: "sim1" });
      await c.createMapping({
        deviceFileId: df.deviceFileId,
        regionIndex: 4,
        offset: 0n,
        length: 8192n,
        attribute: Attribute.WC,
        prot: Prot.READ_WRITE,
      });
      const drained = await admin.drainDevice({ deviceId: "sim1", reason: "maintenance window" });
      assert.deepEqual([drained.revoked!.mappingsRevoked, drained.revoked!.deviceFilesClosed], [1, 1]);
      await until("the revocation", () => events.some((e) => e.kind.case === "revocation"));
      const health = events.find((e) => e.kind.case === "deviceHealth");
      assert.equal(health?.kind.case === "deviceHealth" && health.kind.value.health, DeviceHealth.DRAINING);
      const rev = events.find((e) => e.kind.case === "revocation");
      assert.ok(rev?.kind.case === "revocation");
      assert.equal(rev.kind.value.deviceFileId, df.deviceFileId);
      assert.equal(rev.kind.value.reason, "device-drain");
      assert.equal(rev.kind.value.message, "maintenance window");
      // Draining refuses new device files until undrained.
      await assert.rejects(c.openDevice({ deviceId: "sim1" }), /UNAVAILABLE: device sim1 is draining/);
      await admin.undrainDevice({ deviceId: "sim1" });
      await c.openDevice({ deviceId: "sim1" });
      lease.call.end();
    } finally {
      c.close();
      admin.close();
    }
  });
});
