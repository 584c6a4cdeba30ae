// The Node client's calls the workload protocol lacks (ReadRegion/WriteRegion) behave the same on
// both transports: on the workload protocol they go through a gRPC side session opened at the
// first such call (clients/node/src/side-session.ts), with a mapping's cookie translated to its
// region; the bytes land where the mapping sees them, and an access leaving the mapping or a write
// through a read-only one gets the error the gRPC session gets. close() ends both sessions.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { BrokerClientError, connect } from "@vfio-broker/client";
import { AdminService, createClient } from "@vfio-broker/proto";
import { type BrokerProcess, startBrokerd, until } from "../lib/brokerd.js";

const code = (e: unknown) => (e instanceof BrokerClientError ? e.code : String(e));

describe("the Node client's gRPC-only calls on either transport", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd();
  });
  after(async () => {
    await b?.stop();
  });

  it("read/write through a mapping: the same bytes and the same refusals; close() ends the side session", async () => {
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const names = async () =>
      (await admin.listSessions({})).sessions
        .filter((s) => s.identity?.pid === process.pid)
        .map((s) => s.clientName)
        .sort();
    try {
      const seen: Record<string, string[]> = {};
      for (const [k, transport] of (["workload", "grpc"] as const).entries()) {
        const name = `side-${transport}`;
        const c = await connect({ socket: b.socket, clientName: name, transport });
        const df = await c.open("sim0");
        const rw = await df.map("BAR2", { offset: 0x8000n + BigInt(k) * 0x2000n, length: 4096n, attr: "wc" });
        const ro = await df.map("BAR2", {
          offset: 0x9000n + BigInt(k) * 0x2000n,
          length: 4096n,
          attr: "wc",
          prot: "r",
        });
        assert.deepEqual(await names(), [name], "no gRPC side session before a gRPC-only call");
        await df.write(rw.cookie + 8n, Buffer.from([1, 2, 3, 4]));
        assert.equal(rw.read32(8), 0x04030201, `${transport}: the write landed where the mapping sees it`);
        rw.write32(16, 0xdeadbeef);
        assert.equal((await df.read(rw.cookie + 16n, 4)).readUInt32LE(0), 0xdeadbeef);
        seen[transport] = [
          await df.read(rw.cookie + 4090n, 16).then(() => "ok", code),
          await df.write(ro.cookie, Buffer.from([9])).then(() => "ok", code),
          await df.read(ro.cookie, 4).then(() => "ok", code),
        ];
        assert.deepEqual(
          await names(),
          transport === "workload" ? [name, `${name} (grpc)`] : [name],
          "the workload client opened one side session",
        );
        await c.close();
        await until("both sessions to end", async () => ((await names()).length === 0 ? true : undefined));
      }
      assert.deepEqual(seen.workload, ["INVALID_ARGUMENT", "PERMISSION_DENIED", "ok"]);
      assert.deepEqual(seen.workload, seen.grpc, "the same refusals on both transports");
    } finally {
      admin.close();
    }
  });
});
