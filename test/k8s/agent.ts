// Starts the node agent's DRA plugin in the test process the way main does it (brokerd's device
// list and its claim bindings over its admin socket, the API server, the CDI directory, the
// checkpoint).
import { join } from "node:path";
import { ApiServer } from "@vfio-broker/k8s/apiserver";
import { BrokerdBinder } from "@vfio-broker/k8s/binder";
import { listBrokerdDevices } from "@vfio-broker/k8s/brokerd-devices";
import { CdiStore } from "@vfio-broker/k8s/cdi-store";
import { Checkpoint } from "@vfio-broker/k8s/checkpoint";
import { DraDriver } from "@vfio-broker/k8s/dra-driver";
import { type DraSockets, serveDra } from "@vfio-broker/k8s/dra-server";
import { deviceNameMap } from "@vfio-broker/k8s/slice";
import type { StandIn } from "./apiserver-standin.js";

export interface Agent {
  sockets: DraSockets;
  registrationSocket: string;
  pluginSocket: string;
  checkpoint: Checkpoint;
  driver: DraDriver;
}

export async function startAgent(o: {
  dir: string;
  cdiDir: string;
  adminSocket: string;
  api: StandIn;
  node: string;
  /** The host's workload socket directory the CDI specs mount (default /run/vfio-broker). */
  workloadDir?: string;
}): Promise<Agent> {
  const devices = deviceNameMap(await listBrokerdDevices(o.adminSocket));
  const checkpoint = new Checkpoint(join(o.dir, "checkpoint"));
  const driver = new DraDriver({
    api: new ApiServer({ server: o.api.url, token: o.api.token, ca: o.api.ca }),
    binder: new BrokerdBinder(o.adminSocket),
    cdi: new CdiStore(o.cdiDir),
    checkpoint,
    pool: o.node,
    workloadDir: o.workloadDir ?? "/run/vfio-broker",
    devices: () => devices,
  });
  const registrationSocket = join(o.dir, "vfio-broker.io-reg.sock");
  const pluginSocket = join(o.dir, "dra.sock");
  const sockets = await serveDra(driver, registrationSocket, pluginSocket);
  return { sockets, registrationSocket, pluginSocket, checkpoint, driver };
}
