// Tests for the sysfs backend and its parts (pci-resources.ts, pci-function.ts, sysfs-backing.ts):
// `resource` parsing, BDF normalization, and the sysfs backend over a fake sysfs tree (regular
// files stand in for resourceN: the kernel's mmap rules are tested in test/vm); and that mode
// sysfs-wc (this backend) never opens a device through VFIO while mode vfio does (modes.ts).
import assert from "node:assert/strict";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { BrokerError } from "../errors.js";
import type { RegionInfo } from "./backend.js";
import { serveInMode } from "./modes.js";
import { PciFunction } from "./pci-function.js";
import { normalizeBdf, parseResourceFile } from "./pci-resources.js";
import { SysfsBackend } from "./sysfs.js";
import { chooseSysfsFile } from "./sysfs-backing.js";
import { VfioBackend } from "./vfio.js";
import { VfioOpener } from "./vfio-open.js";

// ivshmem-plain in the test guest: BAR0 256 B registers, BAR2 1 MiB 64-bit prefetchable.
const IVSHMEM = `0x00000000fea11000 0x00000000fea110ff 0x0000000000040200
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x00000000fe800000 0x00000000fe8fffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x000000000000c000 0x000000000000c01f 0x0000000000040101
0x0000000000000000 0x0000000000000000 0x0000000000000000
`;

test("parseResourceFile: sizes, memory/IO, prefetchable, 64-bit", () => {
  const r = parseResourceFile(IVSHMEM);
  assert.equal(r.length, 7);
  assert.deepEqual(
    { size: r[0]!.size, mem: r[0]!.mem, prefetchable: r[0]!.prefetchable },
    { size: 256n, mem: true, prefetchable: false },
  );
  assert.equal(r[1]!.size, 0n);
  assert.deepEqual(
    { start: r[2]!.start, size: r[2]!.size, prefetchable: r[2]!.prefetchable, mem64: r[2]!.mem64 },
    { start: 0xfe800000n, size: 0x100000n, prefetchable: true, mem64: true },
  );
  assert.equal(r[5]!.io, true);
  assert.equal(r[5]!.size, 32n);
  assert.throws(() => parseResourceFile("0x0 0x1\n"), /is not "0x<start> 0x<end> 0x<flags>"/);
});

test("normalizeBdf", () => {
  assert.equal(normalizeBdf("00:01.0"), "0000:00:01.0");
  assert.equal(normalizeBdf("0000:3B:00.1"), "0000:3b:00.1");
  assert.throws(() => normalizeBdf("3b:00"), /not a PCI address/);
});

function fakeDevice(root: string, bdf: string, withWc: boolean): void {
  const d = join(root, bdf);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, "resource"), IVSHMEM);
  writeFileSync(join(d, "vendor"), "0x1af4\n");
  writeFileSync(join(d, "device"), "0x1110\n");
  writeFileSync(join(d, "class"), "0x050000\n");
  writeFileSync(join(d, "config"), Buffer.alloc(256, 0xab));
  writeFileSync(join(d, "resource0"), Buffer.alloc(4096));
  writeFileSync(join(d, "resource2"), Buffer.alloc(1 << 20));
  if (withWc) writeFileSync(join(d, "resource2_wc"), Buffer.alloc(1 << 20));
}

test("the sysfs backend lists regions from `resource` and backs mappings with per-BAR files", () => {
  const root = mkdtempSync(join(tmpdir(), "sysfs-test-"));
  try {
    fakeDevice(root, "0000:00:01.0", true);
    const logs: string[] = [];
    const b = new SysfsBackend({
      devices: ["00:01.0"],
      sysfsRoot: root,
      presencePollMs: 0,
      log: (m) => logs.push(m),
    });
    const [dev] = b.devices();
    assert.equal(dev!.id, "0000:00:01.0");
    assert.deepEqual(
      dev!.regions.map((r) => [r.name, r.size, r.attributes.join("/")]),
      [
        ["BAR0", 256n, "UC"],
        ["BAR2", 0x100000n, "UC/WC"],
        ["CONFIG", 256n, ""],
      ],
    );
    assert.match(logs[0]!, /BAR2 1 MiB UC\/WC/);
    const bar2 = dev!.regions.find((r) => r.name === "BAR2")!;
    const req = {
      deviceId: dev!.id,
      region: bar2,
      offset: 0x1000n,
      length: 0x2000n,
      prot: "rw" as const,
      allowDeviceFd: false,
    };
    const wc = b.openBacking({ ...req, attribute: "WC", allowFallback: false });
    assert.deepEqual(
      [wc.kind, wc.effectiveAttribute, wc.mmapOffset, wc.fallbackReason],
      ["sysfs-wc", "WC", 0x1000n, ""],
    );
    wc.release();
    wc.release();
    const uc = b.openBacking({ ...req, attribute: "UC", allowFallback: false });
    assert.equal(uc.kind, "sysfs");
    uc.release();
    // config space through pread/pwrite; BAR bytes through a brokerd-side mmap
    assert.deepEqual([...b.read(dev!.id, 7, 0n, 2)], [0xab, 0xab]);
    b.write(dev!.id, 2, 0x10n, Buffer.from("hi"));
    assert.equal(b.read(dev!.id, 2, 0x10n, 2).toString(), "hi");
    b.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("WC without a _wc file: refused, or UC with the reason when the request allows fallback", () => {
  const root = mkdtempSync(join(tmpdir(), "sysfs-test-"));
  try {
    fakeDevice(root, "0000:00:02.0", false);
    const fn = new PciFunction("0000:00:02.0", root);
    const region = fn.sysfsRegions().find((r) => r.index === 2) as RegionInfo;
    assert.deepEqual(region.attributes, ["UC"]);
    const req = { deviceId: fn.bdf, region, attribute: "WC" as const };
    assert.throws(
      () => chooseSysfsFile(fn, { ...req, allowFallback: false }),
      (e: unknown) =>
        e instanceof BrokerError &&
        e.code === "INVALID_ARGUMENT" &&
        /no resource2_wc.*request UC, or set allow_fallback/.test(e.message),
    );
    const c = chooseSysfsFile(fn, { ...req, allowFallback: true });
    assert.deepEqual([c.wc, c.effective], [false, "UC"]);
    assert.match(c.fallbackReason, /no resource2_wc .*mapped UC through resource2/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("a function driven by a kernel driver is refused with the unbind command", () => {
  const root = mkdtempSync(join(tmpdir(), "sysfs-test-"));
  try {
    fakeDevice(root, "0000:00:03.0", true);
    mkdirSync(join(root, "drivers", "e1000e"), { recursive: true });
    symlinkSync(join(root, "drivers", "e1000e"), join(root, "0000:00:03.0", "driver"));
    assert.throws(
      () =>
        new SysfsBackend({ devices: ["0000:00:03.0"], sysfsRoot: root, presencePollMs: 0, log: () => {} }),
      /driven by the kernel driver "e1000e".*unbind/,
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("mode sysfs-wc never opens the device through VFIO, even bound to vfio-pci; mode vfio does (devices/modes.ts)", () => {
  const root = mkdtempSync(join(tmpdir(), "sysfs-test-"));
  const devRoot = join(root, "dev-vfio"); // empty: a VFIO open here fails, and is counted below
  const opens: string[] = [];
  const realOpen = VfioOpener.prototype.open;
  VfioOpener.prototype.open = function (fn, backend, log) {
    opens.push(fn.bdf);
    return realOpen.call(this, fn, backend, log);
  };
  try {
    const bdf = "0000:00:04.0";
    fakeDevice(root, bdf, true);
    mkdirSync(join(root, "drivers", "vfio-pci"), { recursive: true });
    mkdirSync(join(root, "iommu_groups", "7"), { recursive: true });
    mkdirSync(devRoot);
    symlinkSync(join(root, "drivers", "vfio-pci"), join(root, bdf, "driver"));
    symlinkSync(join(root, "iommu_groups", "7"), join(root, bdf, "iommu_group"));
    const sysfs = new SysfsBackend({ devices: [bdf], sysfsRoot: root, presencePollMs: 0, log: () => {} });
    const vfio = new VfioBackend({ devices: [], sysfsRoot: root, devRoot, log: () => {} });
    const backends = [sysfs, vfio];
    const served = () => backends.flatMap((b) => b.devices().map((d) => `${b.name}:${d.id}:${d.mode}`));
    assert.deepEqual(served(), [`sysfs:${bdf}:sysfs-wc`]);
    const wc = sysfs.openBacking({
      deviceId: bdf,
      region: sysfs.devices()[0]!.regions.find((r) => r.index === 2)!,
      offset: 0n,
      length: 0x1000n,
      attribute: "WC",
      prot: "rw",
      allowFallback: false,
      allowDeviceFd: false,
    });
    assert.equal(wc.kind, "sysfs-wc");
    wc.release();
    assert.deepEqual(opens, [], "mode sysfs-wc opened the device through VFIO");
    const intoDev = readdirSync("/proc/self/fd").filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith(devRoot);
      } catch {
        return false;
      }
    });
    assert.deepEqual(intoDev, []);
    // The same function switched to mode vfio goes through the VFIO opener (it fails here, with no
    // /dev/vfio to open) and stays in mode sysfs-wc, saying why.
    assert.throws(
      () => serveInMode(backends, bdf, "vfio"),
      (e: unknown) =>
        e instanceof BrokerError &&
        e.code === "FAILED_PRECONDITION" &&
        /cannot be served in mode vfio: .*; it stays in mode sysfs-wc/.test(e.message),
    );
    assert.deepEqual(opens, [bdf]);
    assert.deepEqual(served(), [`sysfs:${bdf}:sysfs-wc`]);
    sysfs.close();
    vfio.close();
  } finally {
    VfioOpener.prototype.open = realOpen;
    rmSync(root, { recursive: true, force: true });
  }
});
