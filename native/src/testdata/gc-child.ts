// gc-child.ts: test helper for memory.test.ts, run with --expose-gc. Creates mappings that are
// dropped without unmap() (finalizer path) and mappings unmapped explicitly before collection (the
// finalizer must not unmap twice), collects, and reports how many mappings of its memfd remain in
// /proc/self/maps.
import { readFileSync } from "node:fs";
import { setImmediate as tick } from "node:timers/promises";
import { closeFd, memfdCreate, mmap } from "../index.js";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");
const name = "vfio-native-gc-test";
const fd = memfdCreate(name, 1 << 20);
const count = (): number =>
  readFileSync("/proc/self/maps", "utf8")
    .split("\n")
    .filter((l) => l.includes(name)).length;
(() => {
  for (let i = 0; i < 50; i++) {
    const m = mmap(fd, 0, 1 << 20, "rw");
    new Uint8Array(m.buffer)[i] = i;
    if (i % 2 === 0) m.unmap();
  }
})();
const before = count();
for (let i = 0; i < 10 && count() > 0; i++) {
  gc();
  await tick();
  await new Promise((r) => setTimeout(r, 10));
}
const after = count();
closeFd(fd);
process.stdout.write(`${JSON.stringify({ before, after })}\n`);
