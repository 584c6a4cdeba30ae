// The per-device mode against a real brokerd process on its simulated devices (the sim backend
// switches through the same AdminService call, holder check and publication as a PCI function):
// the mode in Hello (gRPC and the workload protocol's welcome), GetDevice, ListDevices, the admin
// list and /metrics; SetDeviceMode refused
// while a device file, a pending mapping or a held (revoked, not unmapped) mapping is on the
// device, with a message naming each holder; accepted once nothing holds it, then journaled and
// reported everywhere; bad requests refused. (What a mode means on a real kernel: test/vm.)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { AdminService, Attribute, createClient, DeviceMode, Prot } from "@vfio-broker/proto";
import { freePort } from "../hostile/journal-support.js";
import { type BrokerProcess, startBrokerd, until } from "../lib/brokerd.js";
import { brokerClient, codeOf, present } from "./agents/raw.js";
import { WorkloadClient } from "./agents/workload-client.js";

const SIM_DEVICES = JSON.stringify([
  { id: "sim0", regions: [{ index: 2, size: 1 << 20, prefetchable: true }] },
  { id: "simv", mode: "vfio", regions: [{ index: 0, size: 1 << 16 }] },
]);

async function scrape(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

describe("device modes", () => {
  let b: BrokerProcess;
  let port: number;
  before(async () => {
    port = await freePort();
    b = await startBrokerd({ args: ["--sim-devices", SIM_DEVICES, "--metrics", `127.0.0.1:${port}`] });
  });
  after(async () => {
    await b?.stop();
  });

  it("each device's mode is in Hello, GetDevice, ListDevices, the admin list and the metrics", async () => {
    const c = brokerClient(b.socket);
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      const h = await c.hello({ clientName: "mode-test" });
      assert.deepEqual(h.capabilities!.deviceModes, [DeviceMode.SYSFS_WC, DeviceMode.VFIO]);
      const w = await WorkloadClient.connect(b.fdSocket);
      try {
        const welcome = (await w.hello()).reply;
        assert.equal(welcome.kind.case, "hello");
        if (welcome.kind.case === "hello")
          assert.deepEqual(welcome.kind.value.deviceModes, [DeviceMode.SYSFS_WC, DeviceMode.VFIO]);
      } finally {
        w.close();
      }
      assert.equal((await c.getDevice({ deviceId: "sim0" })).device!.mode, DeviceMode.SYSFS_WC);
      assert.equal((await c.getDevice({ deviceId: "simv" })).device!.mode, DeviceMode.VFIO);
      const listed = (await c.listDevices({})).devices.map((d) => [d.id, d.mode]);
      assert.deepEqual(listed, [
        ["sim0", DeviceMode.SYSFS_WC],
        ["simv", DeviceMode.VFIO],
      ]);
      const all = (await admin.listAllDevices({})).devices.map((d) => [d.id, d.mode]);
      assert.deepEqual(all, listed);
      const m = await scrape(port);
      assert.match(m, /vfio_broker_device_mode\{device="sim0",mode="sysfs-wc"\} 1/);
      assert.match(m, /vfio_broker_device_mode\{device="sim0",mode="vfio"\} 0/);
      assert.match(m, /vfio_broker_device_mode\{device="simv",mode="vfio"\} 1/);
    } finally {
      c.close();
      admin.close();
    }
  });

  it("SetDeviceMode is refused while anything holds the device, naming it; then it switches", async () => {
    const c = brokerClient(b.socket);
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const toVfio = { deviceId: "sim0", mode: DeviceMode.VFIO, reason: "e2e" };
    const refusal = async () => {
      try {
        await admin.setDeviceMode(toVfio);
      } catch (e) {
        return { code: codeOf(e), message: (e as Error).message };
      }
      return { code: "OK", message: "" };
    };
    try {
      const h = await c.hello({ clientName: "holder-e2e" });
      const df = await c.openDevice({ deviceId: "sim0" });
      // an open device file with nothing mapped holds it
      let r = await refusal();
      assert.equal(r.code, "FAILED_PRECONDITION");
      assert.match(r.message, /sim0 stays in mode sysfs-wc: it is in use/);
      assert.ok(
        r.message.includes(
          `session ${h.sessionId} (uid ${process.getuid!()}, pid ${process.pid}, holder-e2e)`,
        ),
      );
      assert.match(r.message, new RegExp(`device file ${df.deviceFileId} open with 0 mapping`));
      // a pending mapping: named with its range, attribute and state
      const created = await c.createMapping({
        deviceFileId: df.deviceFileId,
        regionIndex: 2,
        offset: 0x10000n,
        length: 8192n,
        attribute: Attribute.WC,
        prot: Prot.READ_WRITE,
      });
      r = await refusal();
      assert.match(r.message, /with 1 mapping\(s\): BAR2\+0x10000 8 KiB WC \(pending\)/);
      // delivered to this (live) process, then drained: held until this process releases it
      assert.equal((await present(b.fdSocket, created.ticket)).status, "OK");
      const drained = await admin.drainDevice({ deviceId: "sim0", reason: "mode switch" });
      assert.equal(drained.revoked!.mappingsHeld, 1);
      r = await refusal();
      assert.equal(r.code, "FAILED_PRECONDITION");
      assert.match(
        r.message,
        new RegExp(
          `pid ${process.pid} \\(uid ${process.getuid!()}, session ${h.sessionId}\\) still maps BAR2\\+0x10000 8 KiB WC, revoked \\(device-drain\\) and not yet unmapped`,
        ),
      );
      assert.equal((await c.getDevice({ deviceId: "sim0" })).device!.mode, DeviceMode.SYSFS_WC);
      await c.releaseMapping({ deviceFileId: df.deviceFileId, cookie: created.mapping!.cookie });
      await until(
        "the hold to go",
        async () => (await admin.listMappings({ deviceId: "sim0" })).mappings.length === 0,
      );

      const done = await admin.setDeviceMode(toVfio);
      assert.equal(done.previousMode, DeviceMode.SYSFS_WC);
      assert.equal(done.device!.mode, DeviceMode.VFIO);
      await admin.undrainDevice({ deviceId: "sim0" });
      assert.equal((await c.getDevice({ deviceId: "sim0" })).device!.mode, DeviceMode.VFIO);
      assert.match(await scrape(port), /vfio_broker_device_mode\{device="sim0",mode="vfio"\} 1/);
      assert.match(
        await scrape(port),
        /vfio_broker_device_mode_changes_total\{device="sim0",mode="vfio"\} 1/,
      );
      await until("the journal line", () => readFileSync(b.journal, "utf8").includes('"device.mode"'));
      const line = readFileSync(b.journal, "utf8")
        .split("\n")
        .find((l) => l.includes('"device.mode"'))!;
      assert.match(line, /"device":"sim0","mode":"vfio","previous":"sysfs-wc","reason":"e2e"/);
      // the same mode again changes nothing; a new device file maps in the new mode
      assert.equal((await admin.setDeviceMode(toVfio)).previousMode, DeviceMode.VFIO);
      const df2 = await c.openDevice({ deviceId: "sim0" });
      assert.equal(df2.device!.mode, DeviceMode.VFIO);
      await admin.setDeviceMode({ ...toVfio, mode: DeviceMode.SYSFS_WC }).then(
        () => assert.fail("a device file is open"),
        (e) => assert.equal(codeOf(e), "FAILED_PRECONDITION"),
      );
      await c.closeDevice({ deviceFileId: df2.deviceFileId });
      assert.equal(
        (await admin.setDeviceMode({ ...toVfio, mode: DeviceMode.SYSFS_WC })).device!.mode,
        DeviceMode.SYSFS_WC,
      );
    } finally {
      c.close();
      admin.close();
    }
  });

  it("SetDeviceMode refuses a mode it does not know, an unknown device and a long reason", async () => {
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      const codes = [];
      for (const req of [
        { deviceId: "sim0", mode: DeviceMode.UNSPECIFIED },
        { deviceId: "sim0", mode: 7 as DeviceMode },
        { deviceId: "nope", mode: DeviceMode.VFIO },
        { deviceId: "simv", mode: DeviceMode.VFIO, reason: "x".repeat(257) },
      ])
        codes.push(await admin.setDeviceMode(req).then(() => "OK", codeOf));
      assert.deepEqual(codes, ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "NOT_FOUND", "INVALID_ARGUMENT"]);
    } finally {
      admin.close();
    }
  });
});
