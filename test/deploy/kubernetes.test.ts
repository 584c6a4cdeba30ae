// deploy/kubernetes, validated offline (issues 11 and 22): the kustomization and its hostPath
// fallback build (our emulation, and `kubectl kustomize` too where kubectl is installed: both must
// agree), every resource passes a strict schema check that also rejects unknown fields
// (k8s-manifests.ts), the privileges are the documented ones, and brokerd accepts the ConfigMap's
// policy: its loader parses it, its rule gives a claim's devices to the pod the claim is bound to
// and nothing to any other pod, and brokerd starts on it. The DRA resources and the restricted Pod
// Security check: kubernetes-dra.test.ts.
import assert from "node:assert/strict";
import { chmodSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parseConfig as parseAdminConfig } from "@vfio-broker/admin/config";
import { ClaimBook, checkClaim } from "@vfio-broker/brokerd/claims/book";
import { parseConfig } from "@vfio-broker/brokerd/config";
import { authorizeMapping } from "@vfio-broker/brokerd/policy/evaluate";
import { parsePolicy } from "@vfio-broker/brokerd/policy/schema";
import { parseAllDocuments } from "yaml";
import { REPO, run, startBrokerd, until } from "../lib/brokerd.js";
import { type Built, CLUSTER_SCOPED_KINDS, kustomize, type Resource, strictCheck } from "./k8s-manifests.js";

const DIR = join(REPO, "deploy/kubernetes");
const FALLBACK = join(DIR, "fallback-hostpath");
// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped YAML, checked field by field
type Any = any;

const built = kustomize(DIR);
const fallback = kustomize(FALLBACK);
const find = (kind: string, name: string, from = built): Any => {
  const b = from.find((x) => x.resource.kind === kind && x.resource.metadata.name === name);
  assert.ok(b, `${kind} ${name} is in the kustomization`);
  return b.resource;
};
const podSpec = (r: Any) => (r.kind === "Pod" ? r.spec : r.spec.template.spec);
const policyText = (from = built): string =>
  find("ConfigMap", "vfio-broker-policy", from).data["policy.yaml"];
const key = (r: Resource) => `${r.kind}/${r.metadata.name}`;

/** kubectl kustomize's output for dir, or undefined (and a diagnostic) where kubectl is not installed. */
async function kubectlKustomize(t: { diagnostic(s: string): void }, dir: string) {
  const have = await run("sh", ["-c", "command -v kubectl"]);
  if (have.code !== 0) {
    t.diagnostic("kubectl is not installed: the built-in kustomize emulation alone was used");
    return undefined;
  }
  const k = await run("kubectl", ["kustomize", dir], { timeoutMs: 60_000 });
  assert.equal(k.code, 0, k.stderr);
  return new Map(parseAllDocuments(k.stdout).map((d) => [key(d.toJS()), d.toJS()] as const));
}

test("the kustomization builds; kubectl kustomize (where installed) gives the same resources", async (t) => {
  const kinds = built.map((b) => `${b.resource.kind}/${b.resource.metadata.name}`).sort();
  assert.deepEqual(kinds, [
    "ClusterRole/vfio-broker-node-agent",
    "ClusterRoleBinding/vfio-broker-node-agent",
    "ConfigMap/vfio-broker-policy",
    "DaemonSet/vfio-brokerd",
    "Deployment/vfio-broker-admin",
    "DeviceClass/vfio-broker.io",
    "Namespace/vfio-broker",
    "Namespace/vfio-broker-example",
    "Pod/vfio-broker-example",
    "ResourceClaimTemplate/vfio-broker-sim0",
    "Service/vfio-broker-admin",
    "Service/vfio-brokerd-metrics",
    "ServiceAccount/vfio-broker-node-agent",
    "ValidatingAdmissionPolicy/vfio-broker-node-agent-own-slice",
    "ValidatingAdmissionPolicyBinding/vfio-broker-node-agent-own-slice",
  ]);
  // No kustomize namespace: each namespaced resource names its own, the example its restricted one.
  for (const b of built) {
    const ns = b.resource.metadata.namespace;
    if (CLUSTER_SCOPED_KINDS.includes(b.resource.kind)) assert.equal(ns, undefined, b.source);
    else
      assert.equal(
        ns,
        b.source.startsWith("example-workload") ? "vfio-broker-example" : "vfio-broker",
        b.source,
      );
  }
  const theirs = await kubectlKustomize(t, DIR);
  if (theirs) assert.deepEqual(new Map(built.map((b) => [key(b.resource), b.resource] as const)), theirs);
});

test("the hostPath fallback builds: the policy with the uid/gid rule and the hostPath pod, in vfio-broker", async (t) => {
  assert.deepEqual(fallback.map((b) => key(b.resource)).sort(), [
    "ConfigMap/vfio-broker-policy",
    "Pod/vfio-broker-example-hostpath",
  ]);
  for (const b of fallback) assert.equal(b.resource.metadata.namespace, "vfio-broker", b.source);
  assert.deepEqual(await strictCheck(fallback), []);
  const theirs = await kubectlKustomize(t, FALLBACK);
  if (theirs) assert.deepEqual(new Map(fallback.map((b) => [key(b.resource), b.resource] as const)), theirs);
});

test("every resource passes the strict schema check (types, required and unknown fields)", async (t) => {
  const t0 = Date.now();
  assert.deepEqual(await strictCheck(built), []);
  t.diagnostic(`strict check of ${built.length} resources: ${Date.now() - t0} ms`);
});

test("a misspelled field (hostPid) is rejected, though kubernetes-models' validate() alone accepts it", async () => {
  const ds = structuredClone(find("DaemonSet", "vfio-brokerd"));
  const spec = ds.spec.template.spec;
  spec.hostPid = spec.hostPID;
  delete spec.hostPID;
  const { DaemonSet } = await import("kubernetes-models/apps/v1/DaemonSet");
  assert.doesNotThrow(() => new DaemonSet(ds).validate(), "validate() alone lets unknown fields through");
  const problems = await strictCheck([{ source: "misspelled", resource: ds } satisfies Built]);
  assert.equal(problems.length, 1, problems.join("\n"));
  assert.match(problems[0]!, /'"?hostPid"?' does not exist in type 'IPodSpec'/);
  // ...and a wrong type deeper down, for good measure.
  const bad = structuredClone(find("DaemonSet", "vfio-brokerd"));
  bad.spec.template.spec.containers[0].ports[0].containerPort = "9464";
  assert.match(
    (await strictCheck([{ source: "string port", resource: bad }])).join("\n"),
    /containerPort|number/,
  );
});

test("brokerd's DaemonSet: hostPID, the socket hostPath, the policy at 0400, probes, limits, CHOWN, KILL and SYS_RESOURCE only", () => {
  const ds = find("DaemonSet", "vfio-brokerd");
  const spec = podSpec(ds);
  const [c] = spec.containers;
  assert.equal(spec.hostPID, true);
  assert.deepEqual(spec.volumes.find((v: Any) => v.name === "run").hostPath, {
    path: "/run/vfio-broker",
    type: "DirectoryOrCreate",
  });
  // brokerd's own (admin.sock, handover.sock, lock, state) apart from what workloads mount.
  assert.deepEqual(spec.volumes.find((v: Any) => v.name === "private").hostPath, {
    path: "/run/vfio-brokerd",
    type: "DirectoryOrCreate",
  });
  const policy = spec.volumes.find((v: Any) => v.name === "policy").configMap;
  assert.equal(policy.name, "vfio-broker-policy");
  assert.equal(policy.defaultMode, 0o400);
  assert.equal(c.readinessProbe.httpGet.port, "metrics");
  assert.equal(c.livenessProbe.httpGet.path, "/metrics");
  assert.ok(c.resources.limits.memory && c.resources.limits.cpu && c.resources.requests.memory);
  assert.deepEqual(c.securityContext.capabilities, { drop: ["ALL"], add: ["CHOWN", "KILL", "SYS_RESOURCE"] });
  assert.notEqual(c.securityContext.privileged, true);
  // brokerd accepts its command line, and the policy lands where --policy says.
  const [prog, ...args] = c.command;
  assert.equal(prog, "vfio-brokerd");
  const config = parseConfig(args, {});
  assert.ok(config !== "help");
  assert.equal(config.policy, "/etc/vfio-broker/policy.yaml");
  assert.equal(config.adminGid, 990);
  assert.equal(config.metrics, "0.0.0.0:9464");
  const svc = find("Service", "vfio-brokerd-metrics");
  assert.equal(svc.metadata.annotations["prometheus.io/scrape"], "true");
  assert.deepEqual(svc.spec.selector, ds.spec.selector.matchLabels);
});

test("the console runs unprivileged (990, the admin socket's group) with flags it accepts", () => {
  const d = find("Deployment", "vfio-broker-admin");
  const spec = podSpec(d);
  assert.deepEqual([spec.securityContext.runAsUser, spec.securityContext.runAsGroup], [990, 990]);
  assert.equal(spec.securityContext.runAsNonRoot, true);
  assert.deepEqual(spec.containers[0].securityContext.capabilities, { drop: ["ALL"] });
  const [prog, ...args] = spec.containers[0].command;
  assert.equal(prog, "vfio-broker-admin");
  const config = parseAdminConfig(args, {});
  assert.ok(config !== "help");
  assert.equal(config.adminSocket, "/run/vfio-brokerd/admin.sock");
  // The console mounts brokerd's private dir (read-only), never the workload dir.
  assert.deepEqual(spec.volumes.map((v: Any) => v.hostPath?.path).filter(Boolean), ["/run/vfio-brokerd"]);
  assert.deepEqual(find("Service", "vfio-broker-admin").spec.selector, d.spec.selector.matchLabels);
});

test("the ConfigMap's policy gives a claim's device to the pod it is bound to, and nothing to other pods", () => {
  const book = new ClaimBook();
  const policy = { ...parsePolicy(policyText(), "policy-configmap.yaml"), claims: book };
  const { runAsUser: uid, runAsGroup: gid } = podSpec(find("Pod", "vfio-broker-example")).securityContext;
  const cid = "4f3c2b1a".repeat(8);
  const inPod = (pod: string) => ({
    uid,
    gid,
    pid: 1,
    cgroup: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${pod.replaceAll("-", "_")}.slice/cri-containerd-${cid}.scope`,
    cgroupTrusted: true,
  });
  const bound = "0c4f2a9e-1111-2222-3333-444455556666";
  const other = "0c4f2a9e-1111-2222-3333-777788889999";
  const req = { device: "sim0", region: "BAR2", attribute: "WC", prot: "rw" } as const;
  assert.equal(authorizeMapping(policy, inPod(bound), req).allow, false, "before the claim is bound");
  book.bind(
    checkClaim({
      uid: "9a8b7c6d-0000-4000-8000-0000000000c1",
      namespace: "vfio-broker-example",
      name: "vfio-broker-example-bar-x7k2p",
      pods: [bound],
      devices: ["sim0"],
    }),
  );
  assert.equal(authorizeMapping(policy, inPod(bound), req).allow, true);
  assert.equal(authorizeMapping(policy, inPod(other), req).allow, false, "another pod, the same uid and gid");
  assert.equal(authorizeMapping(policy, inPod(bound), { ...req, device: "sim1" }).allow, false, "not bound");
  assert.equal(authorizeMapping(policy, inPod(bound), { ...req, region: "BAR0" }).allow, false);
});

test("the fallback's policy parses, allows the hostPath pod's identity and only it", () => {
  const policy = parsePolicy(policyText(fallback), "fallback-hostpath/policy-configmap.yaml");
  const pod = podSpec(find("Pod", "vfio-broker-example-hostpath", fallback));
  const { runAsUser: uid, runAsGroup: gid } = pod.securityContext;
  // Kernel-reported cgroups of a pod container under the cgroupfs and systemd drivers.
  const cid = "4f3c2b1a".repeat(8);
  const cgroups = [
    `/kubepods/besteffort/pod0c4f2a9e-1111-2222-3333-444455556666/${cid}`,
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0c4f2a9e_1111_2222_3333_444455556666.slice/cri-containerd-${cid}.scope`,
  ];
  const req = { device: "sim0", region: "BAR2", attribute: "WC", prot: "rw" } as const;
  for (const cgroup of cgroups) {
    const d = authorizeMapping(policy, { uid, gid, pid: 1, cgroup, cgroupTrusted: true }, req);
    assert.equal(d.allow, true, `${cgroup}: ${d.allow ? "" : d.message}`);
    assert.equal(
      authorizeMapping(policy, { uid, gid: 1000, pid: 1, cgroup, cgroupTrusted: true }, req).allow,
      false,
      "another gid",
    );
  }
  assert.equal(
    authorizeMapping(policy, { uid, gid, pid: 1, cgroup: "/user.slice", cgroupTrusted: true }, req).allow,
    false,
    "outside a pod",
  );
  assert.equal(
    authorizeMapping(
      policy,
      { uid, gid, pid: 1, cgroup: cgroups[0]!, cgroupTrusted: true },
      { ...req, region: "BAR0" },
    ).allow,
    false,
  );
});

test("brokerd starts on the ConfigMap's policy and reloads it at the volume's mode (0400)", async () => {
  const b = await startBrokerd({ policyText: policyText() });
  try {
    chmodSync(b.policyPath, 0o400);
    b.proc.kill("SIGHUP");
    const reload = await until("brokerd's policy.reload journal line", () =>
      readFileSync(b.journal, "utf8")
        .split("\n")
        .find((l) => l.includes('"policy.reload"')),
    );
    assert.match(reload ?? "", /"ok":true/);
    const r = await run(process.execPath, [
      join(REPO, "clients/node/dist/cli.js"),
      "devices",
      "--socket",
      b.socket,
    ]);
    // root is in no rule of this policy: brokerd answers, and denies.
    assert.match(r.stderr, /PERMISSION_DENIED/);
  } finally {
    await b.stop();
  }
});
