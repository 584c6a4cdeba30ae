#!/usr/bin/env node
// The node agent's entry point: reads brokerd's devices, then serves the DRA kubelet plugin
// (publishing this node's ResourceSlice) or the device plugin fallback, re-reading brokerd's
// devices every --refresh-seconds, until SIGTERM. Wiring only; each part is its own module.
import { join } from "node:path";
import { ApiServer, inClusterConfig } from "./apiserver.js";
import { BrokerdBinder } from "./binder.js";
import { listBrokerdDevices } from "./brokerd-devices.js";
import { CdiStore } from "./cdi-store.js";
import { Checkpoint } from "./checkpoint.js";
import { type Config, parseArgs } from "./config.js";
import { DevicePluginServer, devicePluginSocket } from "./device-plugin.js";
import { DraDriver } from "./dra-driver.js";
import { serveDra } from "./dra-server.js";
import { DRIVER } from "./names.js";
import { publishSlice } from "./publisher.js";
import { deviceNameMap } from "./slice.js";

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
}

async function runDra(c: Config): Promise<() => Promise<void>> {
  const api = new ApiServer(inClusterConfig(process.env, c.serviceAccountDir));
  let devices = deviceNameMap([]);
  const refresh = async () => {
    const list = await listBrokerdDevices(c.adminSocket);
    devices = deviceNameMap(list);
    const outcome = await publishSlice(api, c.nodeName, list);
    if (outcome !== "unchanged") log("resourceslice", { outcome, devices: list.length });
  };
  await refresh();
  const driver = new DraDriver({
    api,
    binder: new BrokerdBinder(c.adminSocket),
    cdi: new CdiStore(c.cdiDir),
    checkpoint: new Checkpoint(c.stateDir),
    pool: c.nodeName,
    workloadDir: c.workloadDir,
    devices: () => devices,
  });
  const sockets = await serveDra(
    driver,
    join(c.registryDir, `${DRIVER}-reg.sock`),
    join(c.pluginDir, "dra.sock"),
  );
  // Re-binds checkpointed claims brokerd lost (a node reboot); brokerd not up yet is retried at
  // the next tick, never fatal.
  const reconcile = () =>
    driver.reconcile().then(
      ({ rebound, failed }) => {
        if (rebound.length > 0) log("claims-rebound", { claims: rebound });
        for (const f of failed) log("claim-rebind-failed", f);
      },
      (e) => log("reconcile-failed", { error: String(e) }),
    );
  await reconcile();
  const timer = setInterval(() => {
    refresh().catch((e) => log("refresh-failed", { error: String(e) }));
    driver
      .refreshPods()
      .then(
        (rebound) => {
          if (rebound.length > 0) log("claim-pods-rebound", { claims: rebound });
        },
        (e) => log("refresh-pods-failed", { error: String(e) }),
      )
      .then(reconcile);
  }, c.refreshSeconds * 1000);
  return async () => {
    clearInterval(timer);
    await sockets.stop();
  };
}

async function runDevicePlugin(c: Config): Promise<() => Promise<void>> {
  const plugin = new DevicePluginServer(new CdiStore(c.cdiDir), c.workloadDir);
  const names = async () => [...deviceNameMap(await listBrokerdDevices(c.adminSocket)).keys()];
  plugin.setDevices(await names());
  const socket = devicePluginSocket(c.devicePluginDir);
  await plugin.serve(socket);
  await plugin.register(join(c.devicePluginDir, "kubelet.sock"), socket);
  const timer = setInterval(
    () =>
      names().then(
        (n) => plugin.setDevices(n),
        (e) => log("refresh-failed", { error: String(e) }),
      ),
    c.refreshSeconds * 1000,
  );
  return async () => {
    clearInterval(timer);
    await plugin.stop();
  };
}

async function main(): Promise<void> {
  const c = parseArgs(process.argv.slice(2), process.env);
  const stop = c.mode === "dra" ? await runDra(c) : await runDevicePlugin(c);
  log("ready", { mode: c.mode, node: c.nodeName });
  const shutdown = () => {
    stop().then(() => process.exit(0));
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

main().catch((e: unknown) => {
  process.stderr.write(`vfio-broker-k8s: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
