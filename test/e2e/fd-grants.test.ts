// The grant fast path on the fd channel (issue 12): a mapping created and its fd delivered in one
// exchange, for the session whose resume token the request carries, only from that session's own
// process. A stolen token is useless: another uid, or another process of the same uid, is refused
// PERMISSION_DENIED with no fd, and cannot release the owner's mapping either. The client library
// uses this path by default (Hello's fd_grants) and the gRPC path on request.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect } from "@vfio-broker/client";
import { Layout } from "@vfio-broker/proto";
import { type BrokerProcess, NOBODY, REPO, run, startBrokerd } from "../lib/brokerd.js";
import { brokerClient } from "./agents/raw.js";

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
    const rpc = brokerClient(b.socket);
    const hello = await rpc.hello({ clientName: "owner" });
    const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
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
    const junk = await agent(b, NOBODY, ["0".repeat(32), String(df.deviceFileId), "grant"]);
    assert.equal(junk.code, "PERMISSION_DENIED");
    // The owner's own mapping (through the gRPC path here) cannot be released by a thief.
    const m = await rpc.createMapping({
      deviceFileId: df.deviceFileId,
      regionIndex: 2,
      offset: 0n,
      length: 4096n,
      attribute: 2,
      prot: 2,
    });
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
});
