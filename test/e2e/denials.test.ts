// Bad input gets a clear error and loses nothing: every denial and validation path of the API,
// answered with the right gRPC status and a message that says what to change.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Attribute, Prot } from "@vfio-broker/proto";
import { type BrokerProcess, NOBODY, REPO, run, startBrokerd } from "../lib/brokerd.js";
import { brokerClient, codeOf } from "./agents/raw.js";

const AGENTS = join(REPO, "test/dist/e2e/agents");

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.equal(codeOf(e), code, (e as Error).message);
    if (message) assert.match((e as Error).message, message);
    return;
  }
  assert.fail(`expected ${code}, got OK`);
}

describe("denials and validation", () => {
  let b: BrokerProcess;
  before(async () => {
    // Only root is named: uid 65534 must be refused on every call.
    b = await startBrokerd({
      policyText: `version: 1
rules:
  - name: root-only
    match: { uids: [0] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
    limits: { deviceFiles: 4, mappings: 8, bytes: 64KiB }
`,
    });
  });
  after(async () => {
    await b?.stop();
  });

  it("a uid the policy does not name gets PERMISSION_DENIED on every call", async () => {
    const r = await run(process.execPath, [join(AGENTS, "every-call.js"), b.socket], { uid: NOBODY });
    assert.equal(r.code, 0, r.stderr);
    const codes = JSON.parse(r.stdout) as Record<string, string>;
    assert.equal(Object.keys(codes).length, 12);
    for (const [rpc, code] of Object.entries(codes))
      assert.equal(code, "PERMISSION_DENIED", `${rpc}: ${code}`);
  });

  it("ranges, attributes, unknown devices and regions are refused with the right status", async () => {
    const c = brokerClient(b.socket);
    try {
      await expectCode(c.openDevice({ deviceId: "nope0" }), "NOT_FOUND", /no device "nope0"/);
      // A device id over its limit (64 characters of letters, digits, . _ : -) is refused before
      // anything looks it up, and never echoed.
      await expectCode(
        c.openDevice({ deviceId: `${"x".repeat(10_000)}\n` }),
        "INVALID_ARGUMENT",
        /^3 INVALID_ARGUMENT: OpenDeviceRequest\.device_id is 10001 bytes long; at most 64 bytes are allowed$/,
      );
      // Within it, what a client sends comes back quoted, never verbatim.
      await expectCode(c.openDevice({ deviceId: "nope:0" }), "NOT_FOUND", /^5 NOT_FOUND: no device "nope:0"/);
      const df = await c.openDevice({ deviceId: "sim0" });
      const id = df.deviceFileId;
      const map = (
        regionIndex: number,
        offset: bigint,
        length: bigint,
        attribute = Attribute.UC,
        prot = Prot.READ_WRITE,
      ) => c.createMapping({ deviceFileId: id, regionIndex, offset, length, attribute, prot });
      await expectCode(
        map(0, 0n, 4096n, Attribute.WC),
        "INVALID_ARGUMENT",
        /BAR0 cannot be mapped WC.*not a prefetchable BAR/,
      );
      await expectCode(map(2, 16n << 20n, 4096n), "INVALID_ARGUMENT", /passes the end of sim0 BAR2/);
      await expectCode(
        map(2, (16n << 20n) - 4096n, 8192n),
        "INVALID_ARGUMENT",
        /largest length at offset 0xfff000 is 4096/,
      );
      await expectCode(map(2, 0n, 0n), "INVALID_ARGUMENT", /length is 0/);
      await expectCode(map(2, 0n, 4097n), "INVALID_ARGUMENT", /round up to 8192/);
      await expectCode(map(2, 100n, 4096n), "INVALID_ARGUMENT", /offset 0x64 is not a multiple/);
      await expectCode(map(2, (1n << 64n) - 4096n, 8192n), "INVALID_ARGUMENT", /overflows 64 bits/);
      await expectCode(
        map(5, 0n, 4096n),
        "NOT_FOUND",
        /no region 5.*regions are 0 \(BAR0\), 2 \(BAR2\), 7 \(CONFIG\)/,
      );
      await expectCode(map(7, 0n, 4096n), "INVALID_ARGUMENT", /cannot be mmapped/);
      await expectCode(map(2, 0n, 4096n, 9 as Attribute), "INVALID_ARGUMENT", /attribute 9 is not one of/);
      await expectCode(map(2, 0n, 4096n, Attribute.UNSPECIFIED), "INVALID_ARGUMENT", /attribute is required/);
      await expectCode(
        c.createMapping({
          deviceFileId: 999n,
          regionIndex: 2,
          offset: 0n,
          length: 4096n,
          attribute: 1,
          prot: 2,
        }),
        "NOT_FOUND",
        /no device file 999/,
      );
      await expectCode(
        c.releaseMapping({ deviceFileId: id, cookie: 12345n }),
        "NOT_FOUND",
        /no mapping with cookie 12345/,
      );
      await expectCode(
        c.readRegion({ deviceFileId: id, offset: 1n << 50n, length: 4 }),
        "INVALID_ARGUMENT",
        /not inside any region/,
      );
      await expectCode(
        c.readRegion({ deviceFileId: id, offset: 0n, length: 100000 }),
        "INVALID_ARGUMENT",
        /limit per access/,
      );
      // Limits: 64 KiB per session.
      await map(2, 0n, 64n << 10n, Attribute.WC);
      await expectCode(
        map(2, 1n << 20n, 4096n, Attribute.WC),
        "RESOURCE_EXHAUSTED",
        /has 64 KiB mapped of the 64 KiB its quota allows/,
      );
      // Nothing was lost: the session still works.
      const again = await c.listDevices({});
      assert.equal(again.devices.length, 2);
    } finally {
      c.close();
    }
  });

  it("a page mapped WC by one client cannot be mapped UC by another (PAT): FAILED_PRECONDITION", async () => {
    const a = brokerClient(b.socket);
    const bb = brokerClient(b.socket);
    try {
      const dfa = await a.openDevice({ deviceId: "sim1" });
      const dfb = await bb.openDevice({ deviceId: "sim1" });
      await a.createMapping({
        deviceFileId: dfa.deviceFileId,
        regionIndex: 4,
        offset: 8192n,
        length: 8192n,
        attribute: Attribute.WC,
        prot: Prot.READ_WRITE,
      });
      await expectCode(
        bb.createMapping({
          deviceFileId: dfb.deviceFileId,
          regionIndex: 4,
          offset: 0n,
          length: 16384n,
          attribute: Attribute.UC,
          prot: Prot.READ,
        }),
        "FAILED_PRECONDITION",
        /sim1 BAR4 bytes 0x2000-0x3fff .* already mapped WC/,
      );
      // Same attribute shares; a disjoint UC range is fine.
      await bb.createMapping({
        deviceFileId: dfb.deviceFileId,
        regionIndex: 4,
        offset: 8192n,
        length: 4096n,
        attribute: Attribute.WC,
        prot: Prot.READ,
      });
      await bb.createMapping({
        deviceFileId: dfb.deviceFileId,
        regionIndex: 4,
        offset: 0n,
        length: 8192n,
        attribute: Attribute.UC,
        prot: Prot.READ,
      });
    } finally {
      a.close();
      bb.close();
    }
  });
});
