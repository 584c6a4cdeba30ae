// A cgroup names a container or a pod only if no unprivileged user could have created or named it
// (identity/cgroup-trust.ts, docs/security.md "Container identity"). brokerd used to believe any
// path of the right shape, and any user with a delegated cgroup subtree (every systemd login user
// has user@N.service) can mkdir such a path and move itself in: uid 65534 matched a `pods:` rule,
// and naming a real container's id took that container's quota.
//
// Here, as root, delegated subtrees are made the ways a host has them: as systemd delegates
// user@60001.service (directory, cgroup.procs, cgroup.threads and cgroup.subtree_control chowned
// to the user), a directory an operator chowned, and one left writable by others. In each the
// attacker, placed there as a manager would place it and then running as its own uid only, makes
// a cgroup of every shape the code recognises (docker, podman rootful, rootless and cgroupfs,
// containerd and CRI-O under both kubelet drivers, bare kubepods ids, the conmon monitors), moves
// itself in, and asks for a device only a `pods:` or `containers:` rule gives. Then, in a fake
// scope named after a real container's id, it holds mappings while that container's workload (in
// the root-made cgroup) asks for its quota. And a root-made container cgroup still names its
// container and pod, also for a session restored after brokerd is killed (-9) and started again,
// while the forged one is judged again and stays its plain uid. Every cgroup made here is removed
// afterwards.
import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { cgroupMounts } from "@vfio-broker/brokerd/identity/cgroup-trust";
import { AdminService, createClient } from "@vfio-broker/proto";
import { type BrokerProcess, startBrokerd } from "../lib/brokerd.js";
import { removeTree } from "../lib/cgroups.js";
import { assertAlive, report, type Spawned, spawnAs } from "./support/harness.js";

const AGENT = join(dirname(fileURLToPath(import.meta.url)), "agents", "cgroup-identity.js");
const ATTACKER = 60001;
const NOBODY = 65534;
const WORKLOAD = 60002;
const VICTIM = 4242;
const ID = "4f3c2b1a".repeat(8);
const VICTIM_ID = "9e8d7c6b".repeat(8);
const POD = "0c4f2a9e-1111-2222-3333-444455556666";
const POD_ = POD.replaceAll("-", "_");

/** Every cgroup shape identity/container.ts recognises, as an attacker would make it below its own directory. */
const SHAPES: [string, string][] = [
  ["docker (systemd)", `docker-${ID}.scope`],
  ["docker (cgroupfs)", `docker/${ID}`],
  ["podman rootful (systemd)", `machine.slice/libpod-${ID}.scope/container`],
  ["podman (cgroupfs)", `libpod_parent/libpod-${ID}`],
  ["podman rootless layout", `user.slice/libpod-${ID}.scope/container`],
  ["podman conmon", `machine.slice/libpod-conmon-${ID}.scope`],
  ["CRI-O outside Kubernetes", `system.slice/crio-${ID}.scope`],
  [
    "containerd, kubepods systemd driver",
    `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`,
  ],
  [
    "CRI-O, kubepods systemd driver",
    `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice/crio-${ID}.scope`,
  ],
  ["guaranteed pod, systemd driver", `kubepods.slice/kubepods-pod${POD_}.slice/cri-containerd-${ID}.scope`],
  ["pod slice itself", `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice`],
  ["containerd, kubepods cgroupfs driver", `kubepods/besteffort/pod${POD}/${ID}`],
  ["CRI-O, kubepods cgroupfs driver", `kubepods/burstable/pod${POD}/crio-${ID}`],
  ["guaranteed pod, cgroupfs driver", `kubepods/pod${POD}/${ID}`],
  ["CRI-O conmon in a pod", `kubepods/besteffort/pod${POD}/crio-conmon-${ID}.scope`],
];

const POLICY = `version: 1
rules:
  - name: the-pod
    match: { pods: ["${POD}"] }
    devices: [sim1]
    regions: [BAR4]
    attributes: [WC]
    prot: [rw]
  - name: the-containers
    match: { containers: ["${ID}", "${VICTIM_ID}"] }
    devices: [sim1]
    regions: [BAR4]
    attributes: [WC]
    prot: [rw]
    limits: { mappings: 4 }
  - name: attacker-own
    match: { uids: [${ATTACKER}] }
    devices: [sim0]
    regions: [BAR2]
    attributes: [UC, WC]
    prot: [r, rw]
    limits: { mappings: 8 }
`;

const mount = cgroupMounts(readFileSync("/proc/self/mountinfo", "utf8")).v2?.mountPoint;
const ROOT = mount ? join(mount, `vfio-broker-hostile-${process.pid}`) : "";
/** The delegated directories: [name, uid that gets it, directory]. */
const DELEGATED: [string, number, string][] = [
  [
    "user@60001.service, as systemd delegates it",
    ATTACKER,
    join(ROOT, "user.slice/user-60001.slice/user@60001.service"),
  ],
  ["a directory chowned to the user", ATTACKER, join(ROOT, "apps.slice/chowned.scope")],
  ["a directory writable by others", NOBODY, join(ROOT, "open.slice")],
];
const VICTIM_CGROUP = join(ROOT, `system.slice/docker-${VICTIM_ID}.scope`);
const CONTAINER_CGROUP = join(
  ROOT,
  `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`,
);

function agent(uid: number, args: string[]): Spawned & { result(): Promise<Record<string, unknown>> } {
  // Started as root (uid 0): the agent enters its cgroup, then drops to `uid` itself.
  const s = spawnAs(0, [AGENT, ...args]);
  const result = async () => {
    await s.exited;
    const line = s.out().trim().split("\n").pop() ?? "";
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new Error(`agent (uid ${uid}) printed no result:\n${s.out()}\n${s.err()}`);
    }
  };
  return Object.assign(s, { result });
}

async function holding(s: Spawned): Promise<Record<string, unknown>> {
  const t0 = Date.now();
  while (!s.out().includes('"phase":"holding"')) {
    if (s.child.exitCode !== null || Date.now() - t0 > 60_000)
      throw new Error(`the agent did not get to hold:\n${s.out()}\n${s.err()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return JSON.parse(
    s
      .out()
      .split("\n")
      .find((l) => l.includes('"phase":"holding"'))!,
  );
}

async function stop(s: Spawned): Promise<void> {
  s.child.kill("SIGTERM");
  await s.exited;
}

describe("hostile: container identity from a cgroup a user could name", () => {
  let b: BrokerProcess;
  before(async () => {
    assert.ok(
      mount,
      "no cgroup2 mount in /proc/self/mountinfo: this test needs cgroup v2 (unified or hybrid)",
    );
    for (const [, uid, dir] of DELEGATED) {
      mkdirSync(dir, { recursive: true });
      if (dir.endsWith("open.slice")) {
        chmodSync(dir, 0o777);
        chmodSync(join(dir, "cgroup.procs"), 0o666);
      } else {
        // What systemd chowns for Delegate=yes with User=: the directory and the files to manage it.
        for (const f of ["", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"])
          chownSync(join(dir, f), uid, uid);
      }
    }
    mkdirSync(VICTIM_CGROUP, { recursive: true });
    mkdirSync(CONTAINER_CGROUP, { recursive: true });
    // Mappings stay pending (their fds never fetched) for the whole test.
    b = await startBrokerd({ policyText: POLICY, args: ["--ticket-ttl-ms", "600000"] });
  });
  after(async () => {
    await b?.stop();
    if (ROOT) removeTree(ROOT);
  });

  it("a forged container or pod cgroup gets only the plain uid's rights, for every shape and delegation", {
    timeout: 240_000,
  }, async () => {
    const figures: Record<string, unknown> = {};
    let believed = 0;
    let tried = 0;
    const failures: string[] = [];
    for (const [how, uid, dir] of DELEGATED) {
      const a = agent(uid, ["forge", b.socket, dir, String(uid), JSON.stringify(SHAPES)]);
      const { results } = (await a.result()) as {
        results: {
          name: string;
          cgroup: string;
          containerId: string;
          podUid: string;
          hello: string;
          open: string;
          map: string;
          message: string;
        }[];
      };
      assert.equal(results.length, SHAPES.length);
      for (const r of results) {
        tried++;
        assert.ok(
          r.cgroup.endsWith(SHAPES.find(([n]) => n === r.name)![1]),
          `${r.name}: moved into ${r.cgroup}`,
        );
        const mapped = r.open === "OK" && r.map === "OK";
        if (mapped || r.containerId !== "" || r.podUid !== "") {
          believed++;
          failures.push(
            `${how} / ${r.name}: container "${r.containerId}" pod "${r.podUid}" open ${r.open} map ${r.map}`,
          );
        }
        // Refused as the plain uid is: at Hello (65534 is in no rule), OpenDevice or CreateMapping.
        const refusal = [r.hello, r.open, r.map].find((c) => c !== "OK");
        if (!mapped && refusal !== "PERMISSION_DENIED")
          failures.push(`${how} / ${r.name}: refused with ${refusal}, not PERMISSION_DENIED: ${r.message}`);
      }
      figures[how] = {
        mapped: results.filter((r) => r.open === "OK" && r.map === "OK").length,
        namedAsContainer: results.filter((r) => r.containerId !== "").length,
        namedAsPod: results.filter((r) => r.podUid !== "").length,
        of: results.length,
      };
    }
    // The journal's session.open lines of the attackers name no container and no pod.
    const opens = readFileSync(b.journal, "utf8")
      .split("\n")
      .filter((l) => l.includes('"session.open"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((o) => o.uid === ATTACKER || o.uid === NOBODY);
    const journalNamed = opens.filter((o) => o.containerId !== undefined || o.podUid !== undefined).length;
    assertAlive(b);
    report("forged container cgroups", {
      tried,
      believed,
      journalOpens: opens.length,
      journalNamed,
      figures,
    });
    assert.deepEqual(failures, [], "a forged cgroup was believed");
    assert.equal(journalNamed, 0, "the journal named a forged container or pod");
  });

  it("a real container's id in a forged scope does not take that container's quota", {
    timeout: 120_000,
  }, async () => {
    // The attacker, in its own user@60001.service, names the victim's container and holds 8
    // mappings of its own (its uid rule allows them).
    const a = agent(ATTACKER, [
      "hold",
      b.socket,
      DELEGATED[0]![2],
      String(ATTACKER),
      `docker-${VICTIM_ID}.scope`,
      "sim0",
      "2",
      "8",
    ]);
    const attacker = await holding(a);
    // What the console's sessions view shows for it.
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const listed = (await admin.listSessions({})).sessions.find((s) => s.identity?.uid === ATTACKER);
    admin.close();
    // The container's workload, in the cgroup root made for it, asks for its 4.
    const v = agent(VICTIM, ["hold", b.socket, VICTIM_CGROUP, String(VICTIM), "", "sim1", "4", "4"]);
    const victim = await holding(v);
    await stop(v);
    await stop(a);
    assertAlive(b);
    const vMap = victim.map as Record<string, number>;
    report("a real container's id -> its quota", {
      attacker: { cgroup: attacker.cgroup, containerId: attacker.containerId, map: attacker.map },
      console: { containerId: listed?.identity?.containerId, podUid: listed?.identity?.podUid },
      victim: {
        containerId: victim.containerId,
        mapped: `${vMap.OK ?? 0}/4`,
        map: vMap,
        messages: victim.messages,
      },
    });
    assert.equal(attacker.containerId, "", "the forged scope named a container");
    assert.deepEqual(attacker.map, { OK: 8 }, "the attacker keeps its own uid's rights");
    assert.equal(listed?.identity?.containerId, "", "the console showed the forged container");
    assert.equal(victim.containerId, VICTIM_ID, "the root-made container cgroup names its container");
    assert.deepEqual(vMap, { OK: 4 }, `the victim's container quota: ${JSON.stringify(victim.messages)}`);
  });

  it("a container cgroup root made still names its container and pod, and its rules apply", {
    timeout: 60_000,
  }, async () => {
    const w = agent(WORKLOAD, ["hold", b.socket, CONTAINER_CGROUP, String(WORKLOAD), "", "sim1", "4", "1"]);
    const got = await holding(w);
    await stop(w);
    const opens = readFileSync(b.journal, "utf8")
      .split("\n")
      .filter((l) => l.includes('"session.open"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((o) => o.uid === WORKLOAD);
    report("root-made container cgroup", { containerId: got.containerId, podUid: got.podUid, map: got.map });
    assert.equal(got.containerId, ID);
    assert.equal(got.podUid, POD);
    assert.deepEqual(got.map, { OK: 1 }, JSON.stringify(got.messages));
    assert.equal(opens.length, 1);
    assert.deepEqual(
      [opens[0]!.containerId, opens[0]!.podUid, opens[0]!.containerRuntime],
      [ID, POD, "containerd"],
    );
  });

  it("after kill -9 and a restart, restored sessions are judged again: the forged one stays its plain uid", {
    timeout: 120_000,
  }, async () => {
    const w = agent(WORKLOAD, ["hold", b.socket, CONTAINER_CGROUP, String(WORKLOAD), "", "sim1", "4", "1"]);
    const a = agent(ATTACKER, [
      "hold",
      b.socket,
      DELEGATED[0]![2],
      String(ATTACKER),
      `docker-${ID}.scope`,
      "sim0",
      "2",
      "1",
    ]);
    await holding(w);
    await holding(a);
    const exited = new Promise((r) => b.proc.once("exit", r));
    b.proc.kill("SIGKILL");
    await exited;
    b = await startBrokerd({ policyText: POLICY, args: ["--ticket-ttl-ms", "600000"], dir: b.dir });
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const restored = (await admin.listSessions({})).sessions;
    admin.close();
    const of = (uid: number) => restored.find((s) => s.identity?.uid === uid)?.identity;
    await stop(w);
    await stop(a);
    report("restored after kill -9", {
      workload: { containerId: of(WORKLOAD)?.containerId, podUid: of(WORKLOAD)?.podUid },
      attacker: { cgroup: of(ATTACKER)?.cgroup, containerId: of(ATTACKER)?.containerId },
    });
    assert.equal(of(WORKLOAD)?.containerId, ID, "the root-made container is still named after the restart");
    assert.equal(of(WORKLOAD)?.podUid, POD);
    assert.ok(of(ATTACKER)?.cgroup.endsWith(`docker-${ID}.scope`), "the attacker's session was restored");
    assert.equal(of(ATTACKER)?.containerId, "", "the forged scope names no container after the restart");
  });
});
