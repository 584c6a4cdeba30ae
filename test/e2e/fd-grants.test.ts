// The grant fast path on the fd channel (issue 12): a mapping created and its fd delivered in one
// exchange, for the session whose resume token the request carries, only from that session's own
// process. A stolen token is useless: another uid, or another process of the same uid, is refused
// PERMISSION_DENIED with no fd, and cannot release the owner's mapping either. The client library
// uses this path by default (Hello's fd_grants) and the gRPC path on request.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { connect } from "@vfio-broker/client";
import { closeFd, FdSocket } from "@vfio-broker/native";
import { AdminService, createClient, FdReplySchema, FdRequestSchema, FdStatus } from "@vfio-broker/proto";
import { type BrokerProcess, NOBODY, REPO, run, startBrokerd } from "../lib/brokerd.js";
import { rawSession } from "./agents/raw.js";

const AGENT = join(REPO, "test/dist/e2e/agents/fd-grant.js");

async function agent(
  b: BrokerProcess,
  uid: number | undefined,
  args: string[],
): Promise<Record<string, unknown>> {
  const r = await run(process.execPath, [AGENT, b.fdSocket, ...args], uid === undefined ? {} : { uid });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

describe("fd-channel grants", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd();
  });
  after(() => b.stop());

  it("a stolen session token gives another process nothing: no fd, no release", async () => {
    // The owner: this test process (root), via raw gRPC so it can hand its token around.
    const { rpc, hello, df, page } = await rawSession(b.socket, "owner");
    const token = hello.resumeToken;
    assert.match(token, /^[0-9a-f]{32}$/);
    assert.equal(hello.capabilities?.fdGrants, true);
    for (const [who, uid] of [
      ["another uid", NOBODY],
      ["another process of the same uid", undefined],
    ] as const) {
      const r = await agent(b, uid, [token, String(df.deviceFileId), "grant"]);
      assert.equal(r.status, "REFUSED", `${who}: ${JSON.stringify(r)}`);
      assert.equal(r.code, "PERMISSION_DENIED");
      assert.equal(r.fds, 0);
      assert.match(String(r.message), /no session of this process/);
    }
    // A batch with a stolen token: refused as a whole, no fd, no item done.
    const stolen = await agent(b, NOBODY, [token, String(df.deviceFileId), "batch", "3"]);
    assert.deepEqual(
      [stolen.status, stolen.code, stolen.fds, stolen.items],
      ["REFUSED", "PERMISSION_DENIED", 0, 0],
    );
    const junk = await agent(b, NOBODY, ["0".repeat(32), String(df.deviceFileId), "grant"]);
    assert.equal(junk.code, "PERMISSION_DENIED");
    // The owner's own mapping (through the gRPC path here) cannot be released by a thief.
    const m = await rpc.createMapping(page(0));
    const rel = await agent(b, NOBODY, [
      token,
      String(df.deviceFileId),
      "release",
      String(m.mapping!.cookie),
    ]);
    assert.equal(rel.code, "PERMISSION_DENIED");
    await rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie: m.mapping!.cookie });
    rpc.close();
  });

  it("the client maps through the fast path by default, and through gRPC when asked; errors are the same", async () => {
    for (const fdGrants of [true, false]) {
      const c = await connect({ socket: b.socket, fdGrants });
      assert.equal(c.fdGrants, fdGrants);
      const df = await c.open("sim0");
      const m = await df.map("BAR2", { offset: 8192, length: 4096, attr: "wc" });
      m.write32(0, 0xfeedf00d);
      assert.equal((await df.read(m.cookie, 4)).readUInt32LE(0), 0xfeedf00d);
      // WC over pages mapped WC elsewhere is fine; UC over them is the same refusal on both paths.
      const e = await df.map("BAR2", { offset: 8192, length: 4096, attr: "uc" }).catch((x: unknown) => x);
      assert.equal((e as { code?: string }).code, "FAILED_PRECONDITION", String(e));
      assert.match(String((e as Error).message), /^CreateMapping: .*already mapped WC/);
      await m.release();
      await c.close();
    }
  });

  it("an FdBatch does its items on their own, in order (releases first), and its reply carries the granted fds in that order", async () => {
    const { rpc, hello, df, page: grant } = await rawSession(b.socket, "batch");
    const sock = await FdSocket.connect(b.fdSocket);
    const send = async (batch: object) => {
      await sock.send(
        toBinary(
          FdRequestSchema,
          create(FdRequestSchema, { batch: { sessionToken: hello.resumeToken, ...batch } }),
        ),
      );
      const msg = (await sock.recv({ maxBytes: 65536, maxFds: 64 }))!;
      const fds = msg.fds.length;
      for (const fd of msg.fds) closeFd(fd);
      return { reply: fromBinary(FdReplySchema, msg.data), fds };
    };
    // An unknown cookie to release, then a good grant, one past the end of BAR2, another good one.
    const { reply, fds } = await send({
      releases: [{ deviceFileId: df.deviceFileId, cookie: 12345n }],
      grants: [grant(1), grant(1 << 20), grant(2)],
    });
    assert.equal(reply.status, FdStatus.OK);
    assert.deepEqual(
      reply.items.map((i) => [FdStatus[i.status], i.grpcCode]),
      [
        ["REFUSED", "NOT_FOUND"],
        ["OK", ""],
        ["REFUSED", "INVALID_ARGUMENT"],
        ["OK", ""],
      ],
    );
    assert.equal(fds, 2, "one fd per granted item");
    assert.deepEqual([reply.items[1]!.regionOffset, reply.items[3]!.regionOffset], [4096n, 8192n]);
    // The two granted ones are live mappings; releasing them in a batch gives both back.
    const cookies = [reply.items[1]!.cookie, reply.items[3]!.cookie];
    const rel = await send({
      releases: cookies.map((cookie) => ({ deviceFileId: df.deviceFileId, cookie })),
    });
    assert.deepEqual(
      rel.reply.items.map((i) => FdStatus[i.status]),
      ["OK", "OK"],
    );
    assert.equal(rel.fds, 0);
    // More than 32 items: refused as a whole, nothing done.
    const big = await send({ grants: Array.from({ length: 33 }, (_, i) => grant(i)) });
    assert.deepEqual(
      [FdStatus[big.reply.status], big.reply.grpcCode, big.reply.items.length, big.fds],
      ["REFUSED", "INVALID_ARGUMENT", 0, 0],
    );
    assert.match(big.reply.message, /at most 32 items/);
    sock.close();
    rpc.close();
  });

  it("mapMany is all or nothing, and a release not waited for rides along with the next grant", async () => {
    const c = await connect({ socket: b.socket });
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const mine = async () =>
      (await admin.listMappings({})).mappings.filter((m) => m.sessionId === c.sessionId).length;
    try {
      const df = await c.open("sim0");
      const good = [0, 1, 2].map((p) => ({ region: "BAR2", offset: (40 + p) * 4096, length: 4096 }));
      await assert.rejects(
        df.mapMany([...good, { region: "BAR2", offset: 1 << 30, length: 4096 }]),
        (e: Error) => (e as { code?: string }).code === "INVALID_ARGUMENT",
      );
      assert.equal(await mine(), 0, "mapMany left mappings behind after one of them failed");
      assert.equal(df.mappings.length, 0);
      const ms = await df.mapMany(good);
      assert.deepEqual(
        ms.map((m) => m.regionOffset),
        good.map((g) => BigInt(g.offset)),
      );
      ms[0]!.write32(0, 0xabcd);
      // Not waited for: the next map() carries these releases, and maps page 40 afresh.
      const released = ms.map((m) => m.release());
      const again = await df.map("BAR2", { offset: 40 * 4096, length: 4096 });
      await Promise.all(released);
      assert.equal(again.read32(0), 0xabcd);
      assert.equal(await mine(), 1);
      await again.release();
      assert.equal(await mine(), 0);
    } finally {
      admin.close();
      await c.close();
    }
  });
});
