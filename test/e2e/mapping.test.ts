// End to end: an unprivileged client (uid 65534) maps sim0 BAR2 write-combining through the CLI,
// writes a pattern through its own mmap; another process maps the same range and reads it back;
// the Python interop client does the same. brokerd runs as its own process on temp sockets.
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Layout } from "@vfio-broker/proto";
import { type BrokerProcess, CLI, NOBODY, REPO, run, startBrokerd } from "../lib/brokerd.js";
import { brokerClient } from "./agents/raw.js";

const PY = "/usr/bin/python3";
const PY_CLIENT = join(REPO, "clients/python/vfio_broker_client.py");

describe("mapping end to end (sim backend)", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd();
  });
  after(async () => {
    await b?.stop();
  });

  it("uid 65534 writes through a WC mapping; another process reads the bytes through its own", async () => {
    const w = await run(
      process.execPath,
      [
        CLI,
        "map",
        "sim0",
        "BAR2",
        "--offset",
        "0x10000",
        "--length",
        "8192",
        "--attr",
        "wc",
        "--write",
        "0x100=cafef00d0badc0de",
        "--json",
        "--socket",
        b.socket,
      ],
      { uid: NOBODY },
    );
    assert.equal(w.code, 0, `writer failed: ${w.stderr}`);
    const wj = JSON.parse(w.stdout);
    assert.equal(String(wj.effectiveAttribute).toUpperCase(), "WC", w.stdout);
    assert.equal(wj.backing, "memfd");

    const r = await run(process.execPath, [
      CLI,
      "map",
      "sim0",
      "2",
      "--offset",
      "0x10000",
      "--length",
      "8192",
      "--attr",
      "wc",
      "--prot",
      "r",
      "--read",
      "0x100:8",
      "--json",
      "--socket",
      b.socket,
    ]);
    assert.equal(r.code, 0, `reader failed: ${r.stderr}`);
    assert.match(r.stdout, /cafef00d0badc0de/i);
  });

  it("the Python interop client maps, writes and reads back what the Node client wrote", async () => {
    assert.ok(existsSync(PY), `${PY} is missing: apt-get install python3-grpcio python3-grpc-tools`);
    const py = await run(
      PY,
      [
        PY_CLIENT,
        "--socket",
        b.socket,
        "map",
        "sim0",
        "2",
        "--offset",
        "0x10000",
        "--length",
        "8192",
        "--attr",
        "wc",
        "--read",
        "0x100:8",
        "--write",
        "0x200=0123456789abcdef",
        "--json",
      ],
      { uid: NOBODY },
    );
    assert.equal(py.code, 0, `python client failed: ${py.stderr}${py.stdout}`);
    assert.match(py.stdout, /cafef00d0badc0de/i);
    const r = await run(process.execPath, [
      CLI,
      "map",
      "sim0",
      "BAR2",
      "--offset",
      "0x10000",
      "--length",
      "4096",
      "--attr",
      "wc",
      "--read",
      "0x200:8",
      "--json",
      "--socket",
      b.socket,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /0123456789abcdef/i);
  });

  it("legacy layout puts region i at i << 40; compact packs regions from 0; aliases come after", async () => {
    const c = brokerClient(b.socket);
    try {
      const legacy = await c.openDevice({ deviceId: "sim0", layout: Layout.LEGACY });
      const cookies = Object.fromEntries(legacy.regions.map((r) => [r.region!.name, r.cookie]));
      assert.deepEqual(cookies, { BAR0: 0n, BAR2: 2n << 40n, CONFIG: 7n << 40n });
      const compact = await c.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
      const cc = Object.fromEntries(compact.regions.map((r) => [r.region!.name, r.cookie]));
      assert.deepEqual(cc, { BAR0: 0n, BAR2: 64n << 10n, CONFIG: (64n << 10n) + (16n << 20n) });
      const info = await c.getRegionInfo({ deviceFileId: compact.deviceFileId, regionIndex: 2 });
      assert.equal(info.region!.cookie, 64n << 10n);
      const m = await c.createMapping({
        deviceFileId: compact.deviceFileId,
        regionIndex: 2,
        offset: 0n,
        length: 4096n,
        attribute: 2,
        prot: 2,
      });
      assert.equal(
        m.mapping!.cookie,
        (64n << 10n) + (16n << 20n) + 4096n,
        "first alias right after the packed regions",
      );
      const m2 = await c.createMapping({
        deviceFileId: legacy.deviceFileId,
        regionIndex: 0,
        offset: 0n,
        length: 4096n,
        attribute: 1,
        prot: 2,
      });
      assert.equal(m2.mapping!.cookie, 9n << 40n, "legacy aliases start above the 9 fixed region slots");
      // ReadRegion/WriteRegion by cookie: config space says who the device is.
      const cfg = await c.readRegion({ deviceFileId: compact.deviceFileId, offset: cc.CONFIG!, length: 4 });
      assert.deepEqual([...cfg.data], [0x36, 0x1b, 0x10, 0x00]);
      await c.writeRegion({
        deviceFileId: compact.deviceFileId,
        offset: m.mapping!.cookie + 8n,
        data: Buffer.from("hi"),
      });
      const back = await c.readRegion({
        deviceFileId: legacy.deviceFileId,
        offset: (2n << 40n) + 8n,
        length: 2,
      });
      assert.equal(Buffer.from(back.data).toString(), "hi");
    } finally {
      c.close();
    }
  });

  it("the Python client keeps its generated stubs in a cache only this user can write, and uses them next time", async () => {
    const args = [
      PY_CLIENT,
      "--socket",
      b.socket,
      "map",
      "sim0",
      "2",
      "--length",
      "4096",
      "--read",
      "0:4",
      "--json",
    ];
    const cacheOf = (base: string) => join(base, "vfio-broker");
    const mine = mkdtempSync(join(tmpdir(), "vfio-py-cache-"));
    const shared = mkdtempSync(join(tmpdir(), "vfio-py-shared-"));
    chmodSync(shared, 0o777); // anyone may write here: stubs imported from it could be anyone's code
    try {
      const first = await run(PY, args, { env: { XDG_CACHE_HOME: mine } });
      assert.equal(first.code, 0, first.stderr);
      const stubs = readdirSync(cacheOf(mine));
      assert.equal(stubs.length, 1);
      assert.match(stubs[0]!, /^py-[0-9a-f]{32}$/);
      const made = statSync(join(cacheOf(mine), stubs[0]!)).mtimeMs;
      const again = await run(PY, args, { env: { XDG_CACHE_HOME: mine } });
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(readdirSync(cacheOf(mine)), stubs, "the second run made other stubs");
      assert.equal(statSync(join(cacheOf(mine), stubs[0]!)).mtimeMs, made, "the second run regenerated them");
      const open = await run(PY, args, { env: { XDG_CACHE_HOME: shared } });
      assert.equal(open.code, 0, open.stderr);
      assert.equal(
        readdirSync(cacheOf(shared)).filter((f) => f.startsWith("py-")).length,
        0,
        "stubs were kept in a directory others can write",
      );
    } finally {
      rmSync(mine, { recursive: true, force: true });
      rmSync(shared, { recursive: true, force: true });
    }
  });
});
