// Cookie reference counts (issue 12, goal 5; the kernel RFC review's rule): a CreateMapping of the
// same region range, attribute and prot in the same DeviceFile returns the existing cookie with one
// more reference instead of a new alias. Every reply carries a ticket that fetches an fd; each
// ReleaseMapping gives one reference back; the cookie ends with the last. A shared cookie's
// attribute cannot change. The count survives kill -9.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { connect } from "@vfio-broker/client";
import { type BrokerProcess, startBrokerd } from "../lib/brokerd.js";
import { codeOf, present, rawSession } from "./agents/raw.js";

const WC = 2;
const UC = 1;
const RO = 1;

describe("cookie reference counts", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd();
  });
  after(() => b.stop());

  it("the same range, attribute and prot gets the same cookie; each reference fetches an fd and needs a release", async () => {
    const { rpc, df, page } = await rawSession(b.socket, "refs");
    const req = page(1);
    const first = await rpc.createMapping({ ...req, attribute: WC });
    const again = await rpc.createMapping({ ...req, attribute: WC });
    const cookie = first.mapping!.cookie;
    assert.equal(again.mapping!.cookie, cookie, "a second alias was made");
    assert.equal(first.mapping!.refs, 1);
    assert.equal(again.mapping!.refs, 2);
    assert.notEqual(again.ticket, first.ticket, "each reference has its own ticket");
    // Anything else is another mapping: another prot or range (UC over the same pages would be
    // refused as a memory-type conflict, so the attribute is told apart on another range).
    const others = await Promise.all([
      rpc.createMapping({ ...req, attribute: WC, prot: RO }),
      rpc.createMapping({ ...req, attribute: WC, offset: 8192n }),
      rpc.createMapping({ ...req, attribute: UC, offset: 8192n + 4096n }),
    ]);
    const wcNext = await rpc.createMapping({ ...req, attribute: WC, offset: 8192n + 4096n }).catch((e) => e);
    assert.equal(
      codeOf(wcNext),
      "FAILED_PRECONDITION",
      "WC over UC pages is a conflict, not a shared cookie",
    );
    for (const o of others) assert.notEqual(o.mapping!.cookie, cookie);
    assert.equal(new Set(others.map((o) => o.mapping!.cookie)).size, 3);
    // Both tickets fetch an fd: the first the pending one, the second a fresh one for the cookie.
    for (const t of [first.ticket, again.ticket]) {
      const r = await present(b.fdSocket, t);
      assert.deepEqual([r.status, r.fds], ["OK", 1], r.message);
    }
    // A third reference after delivery: its ticket gets a fresh fd too.
    const third = await rpc.createMapping({ ...req, attribute: WC });
    assert.equal(third.mapping!.cookie, cookie);
    assert.equal(third.mapping!.refs, 3);
    assert.deepEqual((await present(b.fdSocket, third.ticket)).fds, 1);
    // A shared cookie's attribute is fixed.
    await assert.rejects(
      rpc.setMappingAttribute({ deviceFileId: df.deviceFileId, cookie, attribute: UC }),
      (e: Error) =>
        codeOf(e) === "FAILED_PRECONDITION" && /shared by 3 CreateMapping references/.test(e.message),
    );
    // Two releases leave the cookie; the third ends it.
    for (let i = 0; i < 2; i++) {
      await rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie });
      const still = await rpc.readRegion({ deviceFileId: df.deviceFileId, offset: cookie, length: 4 });
      assert.equal(still.data.length, 4);
    }
    await rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie });
    await assert.rejects(
      rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie }),
      (e: Error) => codeOf(e) === "NOT_FOUND",
    );
    // Made again after its end, it is a new mapping with one reference.
    const anew = await rpc.createMapping({ ...req, attribute: WC });
    assert.equal(anew.mapping!.refs, 1);
    rpc.close();
  });

  it("the client library gives each map() its own Mapping over the shared cookie, on both paths", async () => {
    for (const fdGrants of [true, false]) {
      const c = await connect({ socket: b.socket, fdGrants });
      const df = await c.open("sim0");
      const a = await df.map("BAR2", { offset: 16384, length: 4096, attr: "wc" });
      const d = await df.map("BAR2", { offset: 16384, length: 4096, attr: "wc" });
      assert.equal(d.cookie, a.cookie, `fdGrants ${fdGrants}`);
      assert.equal(df.mappings.length, 2);
      a.write32(0, 0xc0ffee00 + Number(fdGrants));
      assert.equal(d.read32(0), 0xc0ffee00 + Number(fdGrants), "the two mmaps are the same memory");
      await a.release();
      // d still works, and so does the broker's view of the cookie.
      d.write32(4, 7);
      assert.equal((await df.read(d.cookie + 4n, 4)).readUInt32LE(0), 7);
      assert.deepEqual(df.mappings, [d]);
      await d.release();
      await assert.rejects(df.read(d.cookie, 4), /no mapping|not inside any region/);
      await c.close();
    }
  });
});

describe("cookie reference counts across kill -9", () => {
  it("a restarted brokerd keeps the count: the cookie ends with the last release, not the first", {
    timeout: 60_000,
  }, async () => {
    let b = await startBrokerd();
    try {
      const { rpc, hello, df, page } = await rawSession(b.socket, "refs");
      const req = page(0);
      const first = await rpc.createMapping(req);
      await present(b.fdSocket, first.ticket);
      const again = await rpc.createMapping(req);
      assert.equal(again.mapping!.refs, 2);
      const exited = new Promise((r) => b.proc.once("exit", r));
      b.proc.kill("SIGKILL");
      await exited;
      b = await startBrokerd({ dir: b.dir });
      const resumed = await rpc.hello({ resumeToken: hello.resumeToken });
      assert.equal(resumed.resumed, true);
      // The second reference's ticket was recorded: it still fetches an fd.
      const r = await present(b.fdSocket, again.ticket);
      assert.deepEqual([r.status, r.fds], ["OK", 1], r.message);
      const cookie = first.mapping!.cookie;
      await rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie });
      assert.equal(
        (await rpc.readRegion({ deviceFileId: df.deviceFileId, offset: cookie, length: 4 })).data.length,
        4,
      );
      await rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie });
      await assert.rejects(
        rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie }),
        (e: Error) => codeOf(e) === "NOT_FOUND",
      );
      rpc.close();
    } finally {
      await b.stop();
    }
  });
});
