// The Pod Security Standards' Restricted level (which includes Baseline), as the Kubernetes
// documentation states it for v1.34 ("Pod Security Standards", kubernetes.io/docs/concepts/
// security/pod-security-standards), applied offline to a pod template: every control of both
// tables, field by field, with the page's allowed values. Pure: a pod (metadata + spec) in, the
// violations out as "control: field = value" lines; [] means the pod passes.
//
// Checked (Baseline): HostProcess; host namespaces (hostNetwork, hostPID, hostIPC); privileged
// containers; capabilities added beyond the Baseline list; hostPath volumes; host ports; host
// probes and lifecycle hooks (v1.34+: httpGet/tcpSocket host); AppArmor (profile type and the
// beta annotation); SELinux (type from the allowed list, no user, no role); /proc mount type;
// seccomp not Unconfined; sysctls from the safe list.
// Checked (Restricted): volume types (configMap, csi, downwardAPI, emptyDir, ephemeral,
// persistentVolumeClaim, projected, secret only); allowPrivilegeEscalation false; runAsNonRoot
// true (pod level, or every container); runAsUser not 0; seccomp RuntimeDefault or Localhost (pod
// level, or every container); capabilities drop ALL and add only NET_BIND_SERVICE. The last three
// and privilege escalation are skipped for spec.os.name "windows", as the page says.
// Not checked: the optional "known list" of host ports (the built-in admission has none either).

// biome-ignore lint/suspicious/noExplicitAny: pod specs are untyped YAML
type Any = any;

export const PSS_VERSION = "v1.34";

const BASELINE_CAPS = new Set([
  "AUDIT_WRITE",
  "CHOWN",
  "DAC_OVERRIDE",
  "FOWNER",
  "FSETID",
  "KILL",
  "MKNOD",
  "NET_BIND_SERVICE",
  "SETFCAP",
  "SETGID",
  "SETPCAP",
  "SETUID",
  "SYS_CHROOT",
]);
const SELINUX_TYPES = new Set([
  "",
  "container_t",
  "container_init_t",
  "container_kvm_t",
  "container_engine_t",
]);
const SAFE_SYSCTLS = new Set([
  "kernel.shm_rmid_forced",
  "net.ipv4.ip_local_port_range",
  "net.ipv4.ip_unprivileged_port_start",
  "net.ipv4.tcp_syncookies",
  "net.ipv4.ping_group_range",
  "net.ipv4.ip_local_reserved_ports",
  "net.ipv4.tcp_keepalive_time",
  "net.ipv4.tcp_fin_timeout",
  "net.ipv4.tcp_keepalive_intvl",
  "net.ipv4.tcp_keepalive_probes",
]);
const RESTRICTED_VOLUMES = [
  "configMap",
  "csi",
  "downwardAPI",
  "emptyDir",
  "ephemeral",
  "persistentVolumeClaim",
  "projected",
  "secret",
];
const SECCOMP_OK = new Set(["RuntimeDefault", "Localhost"]);
const APPARMOR_OK = new Set(["RuntimeDefault", "Localhost"]);

/** Every container of the pod, with the path its fields are reported under. */
function containers(spec: Any): [string, Any][] {
  const out: [string, Any][] = [];
  for (const kind of ["containers", "initContainers", "ephemeralContainers"])
    (spec[kind] ?? []).forEach((c: Any, i: number) => {
      out.push([`spec.${kind}[${i}]`, c]);
    });
  return out;
}

/** The violations of the Restricted level (Baseline included) by a pod's metadata and spec. */
export function restrictedViolations(pod: { metadata?: Any; spec: Any }): string[] {
  const v: string[] = [];
  const bad = (control: string, field: string, value: unknown) =>
    v.push(`${control}: ${field} = ${JSON.stringify(value)}`);
  const spec = pod.spec ?? {};
  const psc = spec.securityContext ?? {};
  const all = containers(spec);
  const linux = spec.os?.name !== "windows";

  // --- Baseline ---
  if (psc.windowsOptions?.hostProcess === true)
    bad("HostProcess", "spec.securityContext.windowsOptions.hostProcess", true);
  for (const f of ["hostNetwork", "hostPID", "hostIPC"])
    if (spec[f] === true) bad("Host Namespaces", `spec.${f}`, true);
  for (const [at, c] of all) {
    const sc = c.securityContext ?? {};
    if (sc.windowsOptions?.hostProcess === true)
      bad("HostProcess", `${at}.securityContext.windowsOptions.hostProcess`, true);
    if (sc.privileged === true) bad("Privileged Containers", `${at}.securityContext.privileged`, true);
    for (const cap of sc.capabilities?.add ?? [])
      if (!BASELINE_CAPS.has(cap)) bad("Capabilities", `${at}.securityContext.capabilities.add`, cap);
    (c.ports ?? []).forEach((p: Any, i: number) => {
      if (p.hostPort !== undefined && p.hostPort !== 0)
        bad("Host Ports", `${at}.ports[${i}].hostPort`, p.hostPort);
    });
    if (at.startsWith("spec.ephemeralContainers")) continue; // probes and hooks: containers and initContainers
    for (const probe of ["livenessProbe", "readinessProbe", "startupProbe"])
      for (const how of ["httpGet", "tcpSocket"]) {
        const host = c[probe]?.[how]?.host;
        if (host !== undefined && host !== "")
          bad("Host Probes / Lifecycle Hooks", `${at}.${probe}.${how}.host`, host);
      }
    for (const hook of ["postStart", "preStop"])
      for (const how of ["httpGet", "tcpSocket"]) {
        const host = c.lifecycle?.[hook]?.[how]?.host;
        if (host !== undefined && host !== "")
          bad("Host Probes / Lifecycle Hooks", `${at}.lifecycle.${hook}.${how}.host`, host);
      }
  }
  (spec.volumes ?? []).forEach((vol: Any, i: number) => {
    if (vol.hostPath !== undefined) bad("HostPath Volumes", `spec.volumes[${i}].hostPath`, vol.hostPath);
  });
  const contexts: [string, Any][] = [
    ["spec.securityContext", psc],
    ...all.map(([at, c]) => [`${at}.securityContext`, c.securityContext ?? {}] as [string, Any]),
  ];
  for (const [at, sc] of contexts) {
    const aa = sc.appArmorProfile?.type;
    if (aa !== undefined && !APPARMOR_OK.has(aa)) bad("AppArmor", `${at}.appArmorProfile.type`, aa);
    const se = sc.seLinuxOptions ?? {};
    if (se.type !== undefined && !SELINUX_TYPES.has(se.type))
      bad("SELinux", `${at}.seLinuxOptions.type`, se.type);
    for (const f of ["user", "role"])
      if (se[f] !== undefined && se[f] !== "") bad("SELinux", `${at}.seLinuxOptions.${f}`, se[f]);
    if (sc.seccompProfile?.type === "Unconfined") bad("Seccomp", `${at}.seccompProfile.type`, "Unconfined");
  }
  for (const [at, c] of all) {
    const pm = c.securityContext?.procMount;
    if (pm !== undefined && pm !== "Default") bad("/proc Mount Type", `${at}.securityContext.procMount`, pm);
  }
  for (const [k, val] of Object.entries(pod.metadata?.annotations ?? {}))
    if (
      k.startsWith("container.apparmor.security.beta.kubernetes.io/") &&
      val !== "runtime/default" &&
      !String(val).startsWith("localhost/")
    )
      bad("AppArmor", `metadata.annotations["${k}"]`, val);
  (psc.sysctls ?? []).forEach((s: Any, i: number) => {
    if (!SAFE_SYSCTLS.has(s.name)) bad("Sysctls", `spec.securityContext.sysctls[${i}].name`, s.name);
  });

  // --- Restricted ---
  (spec.volumes ?? []).forEach((vol: Any, i: number) => {
    if (!RESTRICTED_VOLUMES.some((t) => vol[t] !== undefined && vol[t] !== null))
      bad(
        "Volume Types",
        `spec.volumes[${i}]`,
        Object.keys(vol).filter((k) => k !== "name"),
      );
  });
  for (const [at, c] of all) {
    const sc = c.securityContext ?? {};
    if (linux && sc.allowPrivilegeEscalation !== false)
      bad(
        "Privilege Escalation",
        `${at}.securityContext.allowPrivilegeEscalation`,
        sc.allowPrivilegeEscalation,
      );
    if (sc.runAsNonRoot === false || (sc.runAsNonRoot === undefined && psc.runAsNonRoot !== true))
      bad("Running as Non-root", `${at}.securityContext.runAsNonRoot`, sc.runAsNonRoot);
    if (sc.runAsUser === 0) bad("Running as Non-root user", `${at}.securityContext.runAsUser`, 0);
    const sp = sc.seccompProfile?.type;
    if (linux && (sp === undefined ? !SECCOMP_OK.has(psc.seccompProfile?.type) : !SECCOMP_OK.has(sp)))
      bad("Seccomp", `${at}.securityContext.seccompProfile.type`, sp ?? psc.seccompProfile?.type);
    if (linux && !(sc.capabilities?.drop ?? []).includes("ALL"))
      bad("Capabilities", `${at}.securityContext.capabilities.drop`, sc.capabilities?.drop);
    for (const cap of sc.capabilities?.add ?? [])
      if (linux && cap !== "NET_BIND_SERVICE")
        bad("Capabilities", `${at}.securityContext.capabilities.add`, cap);
  }
  if (psc.runAsNonRoot === false) bad("Running as Non-root", "spec.securityContext.runAsNonRoot", false);
  if (psc.runAsUser === 0) bad("Running as Non-root user", "spec.securityContext.runAsUser", 0);
  return v;
}
