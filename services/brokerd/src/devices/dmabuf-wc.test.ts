// The decision of the optional DMABUF WC backing (dmabuf-wc.ts): WC only where the kernel booked
// write-combining for the probed dma-buf page; vfio-pci's own UC- barmap, or nothing, is no WC.
// (The probe itself needs a kernel whose VFIO dma-bufs CPU-map: none is known, see test/vm.)
import assert from "node:assert/strict";
import { test } from "node:test";
import { patShowsWc } from "./dmabuf-wc.js";

test("a dma-buf page is WC only when the kernel booked write-combining for it", () => {
  assert.equal(patShowsWc(["write-combining"]), true);
  assert.equal(patShowsWc(["uncached-minus", "write-combining"]), true);
  assert.equal(patShowsWc(["uncached-minus"]), false);
  assert.equal(patShowsWc([]), false);
});
