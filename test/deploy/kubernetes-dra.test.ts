// deploy/kubernetes's Dynamic Resource Allocation side, offline (issue 22): the DeviceClass and the
// example's ResourceClaimTemplate name the node agent's driver; the agent's RBAC is least privilege
// (claims read, its node's slice written, nothing else) and a ValidatingAdmissionPolicy keeps it to
// its own node's slice; the agent's container holds the only service account token and no
// capability; and the example workload passes the restricted Pod Security level as the Kubernetes
// documentation states it for v1.34 (pod-security.ts, which lists the rules), while the DaemonSet
// and the hostPath fallback pod fail it on the rules they should.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { REPO } from "../lib/brokerd.js";
import { kustomize } from "./k8s-manifests.js";
import { PSS_VERSION, restrictedViolations } from "./pod-security.js";

// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped YAML, checked field by field
type Any = any;
const DRIVER = "vfio-broker.io";
const built = kustomize(join(REPO, "deploy/kubernetes"));
const fallback = kustomize(join(REPO, "deploy/kubernetes/fallback-hostpath"));
const find = (kind: string, name: string, from = built): Any => {
  const b = from.find((x) => x.resource.kind === kind && x.resource.metadata.name === name);
  assert.ok(b, `${kind} ${name} is in the kustomization`);
  return b.resource;
};
const examplePod = () => structuredClone(find("Pod", "vfio-broker-example"));
const controls = (pod: Any) => [...new Set(restrictedViolations(pod).map((v) => v.split(":")[0]))].sort();

test("the DeviceClass selects the agent's driver; the example's claim asks for it, and the pod uses the claim", () => {
  const dc = find("DeviceClass", DRIVER);
  assert.deepEqual(dc.spec.selectors, [{ cel: { expression: `device.driver == "${DRIVER}"` } }]);
  const tpl = find("ResourceClaimTemplate", "vfio-broker-sim0");
  const [req] = tpl.spec.spec.devices.requests;
  assert.equal(req.exactly.deviceClassName, DRIVER);
  assert.match(
    req.exactly.selectors[0].cel.expression,
    /device\.attributes\["vfio-broker\.io"\]\.deviceId == "sim0"/,
  );
  const pod = examplePod();
  assert.equal(pod.metadata.namespace, tpl.metadata.namespace);
  assert.deepEqual(pod.spec.resourceClaims, [{ name: "bar", resourceClaimTemplateName: "vfio-broker-sim0" }]);
  assert.deepEqual(pod.spec.containers[0].resources.claims, [{ name: "bar" }]);
  assert.equal(
    pod.spec.volumes,
    undefined,
    "no volume at all: the socket comes through the claim's CDI spec",
  );
});

test("the node agent's RBAC: get claims; get, create, update slices; nothing else; its own node's slice only", () => {
  const role = find("ClusterRole", "vfio-broker-node-agent");
  assert.deepEqual(role.rules, [
    { apiGroups: ["resource.k8s.io"], resources: ["resourceclaims"], verbs: ["get"] },
    { apiGroups: ["resource.k8s.io"], resources: ["resourceslices"], verbs: ["get", "create", "update"] },
  ]);
  const binding = find("ClusterRoleBinding", "vfio-broker-node-agent");
  assert.deepEqual(binding.roleRef, {
    apiGroup: "rbac.authorization.k8s.io",
    kind: "ClusterRole",
    name: role.metadata.name,
  });
  const sa = find("ServiceAccount", "vfio-broker-node-agent");
  assert.deepEqual(binding.subjects, [
    { kind: "ServiceAccount", name: sa.metadata.name, namespace: sa.metadata.namespace },
  ]);
  assert.equal(sa.automountServiceAccountToken, false);
  const vap = find("ValidatingAdmissionPolicy", "vfio-broker-node-agent-own-slice");
  assert.equal(vap.spec.failurePolicy, "Fail");
  assert.deepEqual(vap.spec.matchConstraints.resourceRules[0].resources, ["resourceslices"]);
  assert.equal(
    vap.spec.matchConditions[0].expression,
    `request.userInfo.username == "system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}"`,
  );
  const checks = vap.spec.validations.map((v: Any) => v.expression).join("\n");
  assert.match(checks, /object\.spec\.nodeName == variables\.tokenNode/);
  assert.match(checks, /object\.spec\.driver == "vfio-broker\.io"/);
  const vapb = find("ValidatingAdmissionPolicyBinding", "vfio-broker-node-agent-own-slice");
  assert.deepEqual([vapb.spec.policyName, vapb.spec.validationActions], [vap.metadata.name, ["Deny"]]);
});

test("the DaemonSet: the agent beside brokerd, root without capabilities, the only container with a token", () => {
  const spec = find("DaemonSet", "vfio-brokerd").spec.template.spec;
  assert.equal(spec.serviceAccountName, "vfio-broker-node-agent");
  assert.equal(spec.automountServiceAccountToken, false);
  const [brokerd, agent] = spec.containers;
  assert.deepEqual([brokerd.name, agent.name], ["brokerd", "node-agent"]);
  assert.deepEqual(agent.securityContext.capabilities, { drop: ["ALL"] });
  assert.equal(agent.securityContext.allowPrivilegeEscalation, false);
  assert.notEqual(agent.securityContext.privileged, true);
  const tokenMounts = (c: Any) => c.volumeMounts.filter((m: Any) => m.name === "token").length;
  assert.deepEqual([tokenMounts(brokerd), tokenMounts(agent)], [0, 1]);
  const token = spec.volumes.find((v: Any) => v.name === "token").projected.sources;
  assert.ok(token[0].serviceAccountToken.expirationSeconds <= 3600);
  const hostPaths = Object.fromEntries(
    spec.volumes.filter((v: Any) => v.hostPath).map((v: Any) => [v.name, v.hostPath.path]),
  );
  const mounted = (c: Any) =>
    c.volumeMounts
      .map((m: Any) => hostPaths[m.name])
      .filter(Boolean)
      .sort();
  assert.deepEqual(mounted(agent), [
    "/run/vfio-brokerd",
    "/var/lib/kubelet/plugins/vfio-broker.io",
    "/var/lib/kubelet/plugins_registry",
    "/var/run/cdi",
  ]);
  assert.ok(
    !mounted(brokerd).some((p: string) => p.startsWith("/var/")),
    "brokerd mounts no kubelet or CDI directory",
  );
  assert.ok(agent.command.includes("--admin-socket=/run/vfio-brokerd/admin.sock"));
  // brokerd reads clients' pods through the host's cgroup tree (its own cgroup namespace hides it).
  assert.equal(hostPaths["host-cgroup"], "/sys/fs/cgroup");
  assert.deepEqual(
    brokerd.volumeMounts.find((m: Any) => m.name === "host-cgroup"),
    { name: "host-cgroup", mountPath: "/host/sys/fs/cgroup", readOnly: true },
  );
  assert.ok(!agent.volumeMounts.some((m: Any) => m.name === "host-cgroup"));
});

test(`the example workload passes the restricted Pod Security level (${PSS_VERSION}); its namespace enforces it`, () => {
  const ns = find("Namespace", "vfio-broker-example");
  assert.equal(ns.metadata.labels["pod-security.kubernetes.io/enforce"], "restricted");
  assert.equal(ns.metadata.labels["pod-security.kubernetes.io/enforce-version"], PSS_VERSION);
  assert.deepEqual(restrictedViolations(examplePod()), []);
});

test("the restricted check fails what it should: the DaemonSet, the hostPath pod, and each rule broken on the example", () => {
  const ds = find("DaemonSet", "vfio-brokerd").spec.template;
  assert.deepEqual(controls(ds), [
    "Capabilities",
    "Host Namespaces",
    "HostPath Volumes",
    "Running as Non-root",
    "Running as Non-root user",
    "Seccomp",
    "Volume Types",
  ]);
  assert.deepEqual(controls(find("Pod", "vfio-broker-example-hostpath", fallback)), [
    "HostPath Volumes",
    "Volume Types",
  ]);
  // [the controls it breaks ("+" between two), how]
  const broken: [string, (p: Any) => void][] = [
    ["HostProcess", (p) => (p.spec.securityContext.windowsOptions = { hostProcess: true })],
    ["Host Namespaces", (p) => (p.spec.hostNetwork = true)],
    ["Host Namespaces", (p) => (p.spec.hostIPC = true)],
    ["Privileged Containers", (p) => (p.spec.containers[0].securityContext.privileged = true)],
    ["Capabilities", (p) => (p.spec.containers[0].securityContext.capabilities.add = ["CHOWN"])],
    ["Capabilities", (p) => (p.spec.containers[0].securityContext.capabilities.drop = ["NET_RAW"])],
    ["HostPath Volumes+Volume Types", (p) => (p.spec.volumes = [{ name: "h", hostPath: { path: "/run" } }])],
    ["Volume Types", (p) => (p.spec.volumes = [{ name: "n", nfs: { server: "x", path: "/" } }])],
    ["Host Ports", (p) => (p.spec.containers[0].ports = [{ containerPort: 80, hostPort: 80 }])],
    [
      "Host Probes / Lifecycle Hooks",
      (p) => (p.spec.containers[0].readinessProbe = { httpGet: { host: "10.0.0.1", port: 80 } }),
    ],
    ["AppArmor", (p) => (p.spec.securityContext.appArmorProfile = { type: "Unconfined" })],
    [
      "AppArmor",
      (p) =>
        (p.metadata.annotations = {
          "container.apparmor.security.beta.kubernetes.io/workload": "unconfined",
        }),
    ],
    ["SELinux", (p) => (p.spec.securityContext.seLinuxOptions = { type: "spc_t" })],
    ["SELinux", (p) => (p.spec.containers[0].securityContext.seLinuxOptions = { user: "system_u" })],
    ["/proc Mount Type", (p) => (p.spec.containers[0].securityContext.procMount = "Unmasked")],
    ["Seccomp", (p) => (p.spec.securityContext.seccompProfile = { type: "Unconfined" })],
    ["Seccomp", (p) => delete p.spec.securityContext.seccompProfile],
    ["Sysctls", (p) => (p.spec.securityContext.sysctls = [{ name: "kernel.msgmax", value: "1" }])],
    ["Privilege Escalation", (p) => delete p.spec.containers[0].securityContext.allowPrivilegeEscalation],
    ["Running as Non-root", (p) => delete p.spec.securityContext.runAsNonRoot],
    ["Running as Non-root user", (p) => (p.spec.containers[0].securityContext.runAsUser = 0)],
  ];
  for (const [control, breakIt] of broken) {
    const pod = examplePod();
    breakIt(pod);
    assert.deepEqual(
      controls(pod),
      control.split("+"),
      `${control}: ${restrictedViolations(pod).join("; ")}`,
    );
  }
  // What the page allows stays allowed.
  const fine = examplePod();
  fine.spec.containers[0].securityContext.capabilities.add = ["NET_BIND_SERVICE"];
  fine.spec.securityContext.sysctls = [{ name: "net.ipv4.ping_group_range", value: "0 1" }];
  fine.spec.volumes = [
    { name: "e", emptyDir: {} },
    { name: "p", projected: { sources: [] } },
  ];
  fine.spec.securityContext.seLinuxOptions = { type: "container_t" };
  assert.deepEqual(restrictedViolations(fine), []);
});
