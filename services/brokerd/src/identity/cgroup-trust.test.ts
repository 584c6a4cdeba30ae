// The cgroup trust rule (cgroup-trust.ts) over a model filesystem: the shapes real engines create
// as root pass; anything under a user's delegated subtree (user@N.service, a chowned directory, a
// directory or cgroup.procs writable by others) names nothing; and, as a property, whatever names a
// user mkdirs below a delegated directory, the verdict never lets them change what the path names.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { readVerifiedCgroup } from "./cgroup-fs.js";
import { type CgroupMount, type CgroupStat, cgroupMounts, inMount, judgeCgroup } from "./cgroup-trust.js";
import { parseCgroup } from "./container.js";

const ID = "4f3c2b1a".repeat(8);
const ID2 = "a1b2c3d4".repeat(8);
const POD = "0c4f2a9e-1111-2222-3333-444455556666";
const POD_ = POD.replaceAll("-", "_");
const V2: CgroupMount = { hierarchy: "v2", mountPoint: "/sys/fs/cgroup", root: "/" };
const V1: CgroupMount = { hierarchy: "v1-systemd", mountPoint: "/sys/fs/cgroup/systemd", root: "/" };

interface Owner {
  uid?: number;
  mode?: number;
  procsUid?: number;
  procsMode?: number;
}

/** A model cgroup filesystem: every directory of every path exists, root-controlled unless `owners` says otherwise. */
function fs(mount: CgroupMount, paths: string[], owners: Record<string, Owner> = {}) {
  const files = new Map<string, CgroupStat>();
  const add = (dir: string) => {
    const o = owners[dir] ?? {};
    const base = inMount(dir, mount)!;
    files.set(base, { uid: o.uid ?? 0, mode: 0o040000 | (o.mode ?? 0o755) });
    for (const f of ["cgroup.procs", "cgroup.threads", "tasks"])
      files.set(`${base}/${f}`, { uid: o.procsUid ?? o.uid ?? 0, mode: 0o100000 | (o.procsMode ?? 0o644) });
  };
  for (const p of paths) {
    const segs = p.split("/").filter(Boolean);
    for (let i = 0; i <= segs.length; i++) add(`/${segs.slice(0, i).join("/")}`);
  }
  return (path: string) => files.get(path);
}

function judge(path: string, owners: Record<string, Owner> = {}, mount = V2) {
  return judgeCgroup(path, mount, fs(mount, [path], owners));
}

test("the shapes engines create as root are trusted", () => {
  for (const path of [
    `/system.slice/docker-${ID}.scope`,
    `/docker/${ID}`,
    `/machine.slice/libpod-${ID}.scope/container`,
    `/libpod_parent/libpod-${ID}`,
    `/system.slice/crio-${ID}.scope`,
    `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`,
    `/kubepods.slice/kubepods-pod${POD_}.slice/crio-${ID}.scope`,
    `/kubepods/burstable/pod${POD}/${ID}`,
    `/kubepods/burstable/pod${POD}/crio-conmon-${ID}.scope`,
  ]) {
    assert.deepEqual(judge(path), { trusted: true }, path);
    assert.deepEqual(judge(path, {}, V1), { trusted: true }, `${path} (v1)`);
  }
});

test("a user's delegated subtree names nothing: user@N.service, chowned, or writable by others", () => {
  const rootless = `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope`;
  // Rootless podman: under user@1000.service, even if every directory were root's.
  assert.match(String((judge(rootless) as { why: string }).why), /user@1000\.service/);
  const base = "/user.slice/user-60001.slice/app.slice";
  const fake = `${base}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`;
  const kube = "/user.slice/user-60001.slice/app.slice/kubepods.slice";
  const cases: [string, Record<string, Owner>, RegExp][] = [
    [fake, { [base]: { uid: 60001 } }, /owned by uid 60001/],
    [fake, { [base]: { procsUid: 60001 } }, /cgroup\.procs is owned by uid 60001/],
    [fake, { [base]: { mode: 0o777 } }, /writable by group or others/],
    [fake, { [base]: { mode: 0o775 } }, /writable by group or others/],
    [fake, { [base]: { procsMode: 0o666 } }, /cgroup\.procs is writable/],
    [fake, { [kube]: { uid: 60001 } }, /owned by uid 60001/],
    [`/system.slice/docker-${ID}.scope`, { "/system.slice": { uid: 5 } }, /owned by uid 5/],
    [`/system.slice/docker-${ID}.scope`, { "/": { mode: 0o757 } }, /writable/],
  ];
  for (const [path, owners, why] of cases) {
    const v = judge(path, owners);
    assert.equal(v.trusted, false, path);
    assert.match((v as { why: string }).why, why);
  }
  // Missing directories (the process moved, the cgroup is gone) and paths brokerd cannot see.
  assert.equal(judgeCgroup(`/docker/${ID}`, V2, () => undefined).trusted, false);
  assert.match(String((judge(`/../../docker/${ID}`) as { why: string }).why), /cgroup namespace/);
  assert.equal(judge("").trusted, false);
});

test("below the container segment nothing is read: a runtime may delegate the container's own cgroup (v2)", () => {
  const path = `/machine.slice/libpod-${ID}.scope/container/sub`;
  const delegated = {
    [`/machine.slice/libpod-${ID}.scope`]: { uid: 100000 },
    [`/machine.slice/libpod-${ID}.scope/container`]: { uid: 100000 },
  };
  assert.deepEqual(judge(path, delegated), { trusted: true });
  // v1 has no common-ancestor rule for moving processes: there the container's own cgroup counts.
  assert.equal(judge(path, delegated, V1).trusted, false);
  // A pod cgroup with no container segment: every parent down to the leaf.
  assert.equal(
    judge(`/kubepods/burstable/pod${POD}/x`, { [`/kubepods/burstable/pod${POD}`]: { uid: 7 } }).trusted,
    false,
  );
});

test("the cgroup mount: unified, hybrid (cgroup2 beside v1), bind-mounted subtrees, escaped names", () => {
  const hybrid = [
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
  ].join("\n");
  assert.deepEqual(cgroupMounts(hybrid), {
    v2: { hierarchy: "v2", mountPoint: "/sys/fs/cgroup/unified", root: "/" },
    "v1-systemd": { hierarchy: "v1-systemd", mountPoint: "/sys/fs/cgroup/systemd", root: "/" },
  });
  const unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
  assert.deepEqual(cgroupMounts(unified), {
    v2: { hierarchy: "v2", mountPoint: "/sys/fs/cgroup", root: "/" },
  });
  // A subtree bind-mounted first, the whole tree later: the whole tree is used.
  const two = [
    "50 23 0:26 /kubepods /mnt/a\\040b rw - cgroup2 cgroup2 rw",
    "51 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw",
  ].join("\n");
  assert.equal(cgroupMounts(two).v2?.mountPoint, "/sys/fs/cgroup");
  assert.equal(
    cgroupMounts("50 23 0:26 /kubepods /mnt/a\\040b rw - cgroup2 cgroup2 rw").v2?.mountPoint,
    "/mnt/a b",
  );
  assert.deepEqual(cgroupMounts(""), {});
  const sub: CgroupMount = { hierarchy: "v2", mountPoint: "/mnt/cg", root: "/kubepods" };
  assert.equal(inMount("/kubepods/besteffort", sub), "/mnt/cg/besteffort");
  assert.equal(inMount("/kubepods", sub), "/mnt/cg");
  assert.equal(inMount("/kubepodsx", sub), undefined);
  assert.equal(inMount("/", V2), "/sys/fs/cgroup");
  assert.equal(
    inMount("/a/b", { ...V2, mountPoint: "/sys/fs/cgroup/unified/" }),
    "/sys/fs/cgroup/unified/a/b",
  );
  // Directories above a bind-mounted subtree cannot be checked: not trusted.
  const path = `/kubepods/besteffort/pod${POD}/${ID}`;
  assert.match(
    String((judgeCgroup(path, sub, () => ({ uid: 0, mode: 0o755 })) as { why: string }).why),
    /not visible/,
  );
});

test("read, check, read again: a process that moved between the reads is not believed", () => {
  const docker = { path: `/system.slice/docker-${ID}.scope`, hierarchy: "v2" as const };
  const ok = () => ({ trusted: true }) as const;
  assert.deepEqual(
    readVerifiedCgroup(() => docker, ok),
    { cgroup: docker.path, cgroupTrusted: true },
  );
  const reads = [docker, { ...docker, path: `/system.slice/docker-${ID2}.scope` }];
  assert.equal(readVerifiedCgroup(() => reads.shift(), ok).cgroupTrusted, false);
  const gone = [docker, undefined];
  assert.equal(readVerifiedCgroup(() => gone.shift(), ok).cgroupTrusted, false);
  assert.equal(
    readVerifiedCgroup(
      () => docker,
      () => ({ trusted: false, why: "x" }),
    ).cgroupTrusted,
    false,
  );
  // A path that names nothing is not checked at all (nothing to believe).
  let judged = 0;
  const plain = { path: "/user.slice/user-1000.slice/session-3.scope", hierarchy: "v2" as const };
  assert.deepEqual(
    readVerifiedCgroup(
      () => plain,
      () => {
        judged++;
        return { trusted: true };
      },
    ),
    { cgroup: plain.path, cgroupTrusted: false },
  );
  assert.equal(judged, 0);
  assert.deepEqual(
    readVerifiedCgroup(() => undefined),
    { cgroup: "", cgroupTrusted: false },
  );
});

// --- properties -----------------------------------------------------------------------------------

/** Every segment shape container.ts reads, and some it does not. */
const SEGMENT = fc.constantFrom(
  `docker-${ID}.scope`,
  `libpod-${ID}.scope`,
  `cri-containerd-${ID2}.scope`,
  `crio-${ID2}.scope`,
  `crio-conmon-${ID}.scope`,
  `libpod-conmon-${ID}.scope`,
  ID,
  ID2,
  "docker",
  "libpod_parent",
  "kubepods",
  "kubepods.slice",
  "besteffort",
  "burstable",
  "kubepods-besteffort.slice",
  "kubepods-burstable.slice",
  `pod${POD}`,
  `kubepods-besteffort-pod${POD_}.slice`,
  `kubepods-pod${POD_}.slice`,
  "system.slice",
  "machine.slice",
  "user.slice",
  "container",
  "init.scope",
);
const ATTACKER = 60001;
/** How a directory comes to be delegated: as systemd does it, or by an operator's chown or chmod. */
const DELEGATION = fc.constantFrom<[string | undefined, Owner]>(
  ["user@60001.service", { uid: ATTACKER, procsUid: ATTACKER }],
  ["user@60001.service", {}],
  [undefined, { uid: ATTACKER }],
  [undefined, { procsUid: ATTACKER }],
  [undefined, { mode: 0o777 }],
  [undefined, { mode: 0o775 }],
  [undefined, { procsMode: 0o666 }],
);

test("property: names a user creates below a delegated directory never change what a trusted path names", () => {
  fc.assert(
    fc.property(
      fc.array(SEGMENT, { maxLength: 5 }),
      DELEGATION,
      SEGMENT,
      fc.array(SEGMENT, { maxLength: 6 }),
      fc.boolean(),
      (prefix, [delegatedName, owner], name, chosen, v1) => {
        const mount = v1 ? V1 : V2;
        const delegated = `/${[...prefix, delegatedName ?? name].join("/")}`;
        const path = `/${[...prefix, delegatedName ?? name, ...chosen].join("/")}`;
        // Root made the prefix and the delegated directory; the user made everything below it.
        const owners: Record<string, Owner> = { [delegated]: owner };
        for (let i = 1; i <= chosen.length; i++)
          owners[`${delegated}/${chosen.slice(0, i).join("/")}`] = { uid: ATTACKER };
        const v = judgeCgroup(path, mount, fs(mount, [path], owners));
        if (v.trusted) assert.deepEqual(parseCgroup(path), parseCgroup(delegated), path);
      },
    ),
    { numRuns: 3000 },
  );
});

test("property: a chain root made and controls is trusted, whatever lies below its container segment (v2)", () => {
  fc.assert(
    fc.property(
      fc.array(SEGMENT, { maxLength: 7 }),
      fc.array(fc.constantFrom("a", "b.scope", `docker-${ID2}.scope`, "user@60001.service"), {
        maxLength: 3,
      }),
      (segments, below) => {
        const path = `/${segments.join("/")}`;
        assert.deepEqual(judge(path), { trusted: true }, path);
        const c = parseCgroup(path);
        if (c.containerId === undefined) return;
        // The runtime's own sub-cgroups, or ones the container made (delegated to its root).
        const deeper = `${path}/${below.join("/")}`;
        const owners: Record<string, Owner> = {};
        for (let i = 1; i <= below.length; i++)
          owners[`${path}/${below.slice(0, i).join("/")}`] = { uid: 100000 };
        assert.deepEqual(judge(deeper.replace(/\/$/, ""), owners), { trusted: true }, deeper);
        assert.deepEqual(parseCgroup(deeper.replace(/\/$/, "")), c);
      },
    ),
    { numRuns: 2000 },
  );
});
