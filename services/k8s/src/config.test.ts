// Tests for config.ts (pure): defaults, flags, and the refusals.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseArgs } from "./config.js";

test("defaults: DRA, the node from NODE_NAME, the kubelet's and brokerd's usual paths", () => {
  const c = parseArgs([], { NODE_NAME: "worker-1" });
  assert.equal(c.mode, "dra");
  assert.equal(c.nodeName, "worker-1");
  assert.equal(c.cdiDir, "/var/run/cdi");
  assert.equal(c.registryDir, "/var/lib/kubelet/plugins_registry");
  assert.equal(c.adminSocket, "/run/vfio-brokerd/admin.sock");
  assert.equal(c.refreshSeconds, 30);
  assert.equal(c.stateDir, "/var/lib/kubelet/plugins/vfio-broker.io/checkpoint");
});

test("--option=VALUE as a Kubernetes manifest writes it, beside --option VALUE", () => {
  const c = parseArgs(["--node-name=w-2", "--plugin-dir=/p", "--cdi-dir", "/c"], {});
  assert.equal(c.nodeName, "w-2");
  assert.equal(c.cdiDir, "/c");
  assert.equal(c.stateDir, "/p/checkpoint");
  assert.throws(() => parseArgs(["--node-name="], {}), /node name/);
});

test("flags override; bad values are refused", () => {
  const c = parseArgs(["--mode", "device-plugin", "--node-name", "n", "--refresh-seconds", "5"], {});
  assert.equal(c.mode, "device-plugin");
  assert.equal(c.refreshSeconds, 5);
  assert.throws(() => parseArgs([], {}), /node name/);
  assert.throws(() => parseArgs(["--mode", "csi"], { NODE_NAME: "n" }), /dra or device-plugin/);
  assert.throws(() => parseArgs(["--refresh-seconds", "0"], { NODE_NAME: "n" }), /1 to 3600/);
  assert.throws(
    () => parseArgs(["--bogus", "1"], { NODE_NAME: "n" }),
    /unknown or incomplete option --bogus/,
  );
  assert.throws(() => parseArgs(["--cdi-dir"], { NODE_NAME: "n" }), /incomplete/);
});
