// The rendered DaemonSet (deploy/kubernetes) and the node agent agree: the agent's container
// command, with $(VAR) expanded from its env as the kubelet does, is a command line the agent
// accepts (config.ts's parseArgs, the one main.ts uses), and every directory it names for a socket
// or a file is one the container mounts from the host (the root filesystem is read-only).
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { parseArgs } from "@vfio-broker/k8s/config";
import { kustomize } from "../deploy/k8s-manifests.js";
import { REPO } from "../lib/brokerd.js";

// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped YAML, checked field by field
type Any = any;

test("the DaemonSet's node-agent command parses, and names only directories the container mounts", () => {
  const ds = kustomize(join(REPO, "deploy/kubernetes")).find(
    (x) => x.resource.kind === "DaemonSet" && x.resource.metadata.name === "vfio-brokerd",
  )?.resource as Any;
  assert.ok(ds, "the DaemonSet is rendered");
  const agent = ds.spec.template.spec.containers.find((c: Any) => c.name === "node-agent");
  assert.equal(agent.command[0], "vfio-broker-k8s");
  const env: Record<string, string> = { NODE_NAME: "worker-1" }; // spec.nodeName, from the downward API
  assert.ok(
    agent.env.some((e: Any) => e.name === "NODE_NAME" && e.valueFrom.fieldRef.fieldPath === "spec.nodeName"),
  );
  const argv = agent.command
    .slice(1)
    .map((a: string) => a.replace(/\$\(([A-Z_]+)\)/g, (_: string, v: string) => env[v] ?? ""));
  const c = parseArgs(argv, {});
  assert.equal(c.mode, "dra");
  assert.equal(c.nodeName, "worker-1");
  const mounts: string[] = agent.volumeMounts.map((m: Any) => m.mountPath);
  const under = (p: string) => mounts.some((m) => p === m || p.startsWith(`${m}/`));
  for (const [what, path] of [
    ["admin socket", c.adminSocket],
    ["CDI directory", c.cdiDir],
    ["plugin directory", c.pluginDir],
    ["registration directory", c.registryDir],
    ["checkpoint directory", c.stateDir],
    ["service account directory", c.serviceAccountDir],
  ] as const) {
    assert.ok(under(path), `the ${what} ${path} is in a volume the container mounts (${mounts.join(", ")})`);
  }
  assert.equal(agent.securityContext.readOnlyRootFilesystem, true);
});
