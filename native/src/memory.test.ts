// memory.test.ts: memfds and mappings: shared bytes across mappings, unmap detaches exactly once,
// the finalizer path (child with --expose-gc), and the range checks that keep mmap from faulting.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { closeFd, memfdCreate, mmap, NativeError, PAGE_SIZE } from "./index.js";

test("PAGE_SIZE is the kernel page size", () => {
  assert.equal(PAGE_SIZE, 4096);
});

test("a write through one Mapping is read through another of the same memfd", () => {
  const fd = memfdCreate("vfio-native-test", 2 * PAGE_SIZE);
  try {
    const a = mmap(fd, 0, 2 * PAGE_SIZE, "rw");
    const b = mmap(fd, BigInt(PAGE_SIZE), PAGE_SIZE, "r");
    assert.equal(a.buffer.byteLength, 2 * PAGE_SIZE);
    assert.equal(b.length, PAGE_SIZE);
    const bytes = new Uint8Array(a.buffer);
    bytes.set(Buffer.from("shared-bytes"), PAGE_SIZE + 10);
    assert.equal(Buffer.from(b.buffer, 10, 12).toString(), "shared-bytes");
    a.unmap();
    b.unmap();
  } finally {
    closeFd(fd);
  }
});

test("unmap() detaches the buffer, and a second unmap() is harmless", () => {
  const fd = memfdCreate("vfio-native-test", PAGE_SIZE);
  const m = mmap(fd, 0, PAGE_SIZE, "rw");
  const view = new Uint8Array(m.buffer);
  view[0] = 7;
  assert.equal(m.mapped, true);
  m.unmap();
  assert.equal(m.mapped, false);
  assert.equal(m.buffer.byteLength, 0);
  assert.equal(view.length, 0);
  assert.equal(view[0], undefined);
  m.unmap();
  assert.equal(m.buffer.byteLength, 0);
  const again = mmap(fd, 0, PAGE_SIZE, "r");
  assert.equal(new Uint8Array(again.buffer)[0], 7, "the data lives in the memfd, not the mapping");
  again.unmap();
  closeFd(fd);
});

test("memfdCreate accepts a bigint size and the file really has that size", () => {
  const fd = memfdCreate("vfio-native-test", 3n * BigInt(PAGE_SIZE));
  const m = mmap(fd, 2 * PAGE_SIZE, PAGE_SIZE, "rw");
  assert.throws(() => mmap(fd, 3 * PAGE_SIZE, 1, "r"), { code: "EINVAL" });
  m.unmap();
  closeFd(fd);
});

test("mappings dropped without unmap() are unmapped by the finalizer, exactly once", () => {
  const script = fileURLToPath(new URL("./testdata/gc-child.js", import.meta.url));
  const out = execFileSync(process.execPath, ["--expose-gc", script], { encoding: "utf8", timeout: 30_000 });
  const r = JSON.parse(out) as { before: number; after: number };
  assert.ok(r.before > 0, `25 mappings should be live before gc, saw ${r.before}`);
  assert.equal(r.after, 0, "every mapping is gone after gc");
});

test("mmap refuses bad ranges with a NativeError, never a crash", () => {
  const fd = memfdCreate("vfio-native-test", 2 * PAGE_SIZE);
  const cases: [string, () => unknown, string, RegExp][] = [
    ["length 0", () => mmap(fd, 0, 0, "rw"), "EINVAL", /length must be at least 1/],
    ["past the end", () => mmap(fd, PAGE_SIZE, 2 * PAGE_SIZE, "rw"), "EINVAL", /past the end of the file/],
    [
      "negative offset",
      () => mmap(fd, -PAGE_SIZE, PAGE_SIZE, "rw"),
      "EINVAL",
      /offset must be a non-negative/,
    ],
    ["negative bigint offset", () => mmap(fd, -4096n, PAGE_SIZE, "rw"), "EINVAL", /offset/],
    ["huge offset", () => mmap(fd, 2 ** 60, PAGE_SIZE, "rw"), "EINVAL", /offset/],
    ["huge bigint offset", () => mmap(fd, 2n ** 64n, PAGE_SIZE, "rw"), "EINVAL", /offset/],
    ["offset near 2^63", () => mmap(fd, 2n ** 63n - 4096n, PAGE_SIZE, "rw"), "EINVAL", /past the end/],
    [
      "unaligned offset",
      () => mmap(fd, 100, PAGE_SIZE, "rw"),
      "EINVAL",
      /not a multiple of the 4096-byte page; use 0 or 4096/,
    ],
    ["fractional length", () => mmap(fd, 0, 1.5, "rw"), "EINVAL", /length must be an integer/],
    ["bad prot", () => mmap(fd, 0, PAGE_SIZE, "x" as "r"), "EINVAL", /prot/],
    [
      "string fd",
      () => mmap("3" as unknown as number, 0, PAGE_SIZE, "r"),
      "EINVAL",
      /fd must be an integer, got string/,
    ],
    ["negative memfd size", () => memfdCreate("x", -1), "EINVAL", /size/],
  ];
  for (const [what, fn, code, message] of cases) {
    assert.throws(fn, (err: NativeError) => {
      assert.ok(err instanceof NativeError, what);
      assert.equal(err.code, code, what);
      assert.equal(typeof err.errno, "number", what);
      assert.ok(err.errno > 0, what);
      assert.match(err.message, message, what);
      return true;
    });
  }
  closeFd(fd);
  assert.throws(() => mmap(fd, 0, PAGE_SIZE, "rw"), {
    code: "EBADF",
    errno: 9,
    message: `fstat(fd ${fd}): Bad file descriptor`,
  });
});
