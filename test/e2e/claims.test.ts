// Kubernetes claims bound through AdminService.BindClaim (claims/bindings.ts), end to end with
// brokerd as its own process: a policy rule `match: { claims: true }` gives a bound claim's devices
// to exactly the pods the claim is bound to, matched by the pod UID brokerd reads from the caller's
// cgroup. The pods are cgroups made here as root in the kubelet's systemd-driver shape (what
// test/hostile/cgroup-identity.test.ts shows brokerd trusts), each with a workload process that
// test/hostile/agents/cgroup-identity.ts places in it and drops to its own uid. Checked: nothing is
// granted before a bind; the bound pod maps the bound device and nothing else; another pod gets
// nothing; bad binds are refused; a kill -9 and restart keep the binding (a new process of the pod
// maps again); unbind revokes what the pod's sessions hold (reason claim-unprepared) and is
// idempotent; and a user who makes pod A's path in its own delegated cgroup (as any systemd login
// user can) gets nothing from the claim. Every cgroup made here is removed afterwards.
import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdirSync, readFileSync, readlinkSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { AdminService, createClient } from "@vfio-broker/proto";
import { report, type Spawned, spawnAs } from "../hostile/support/harness.js";
import { type BrokerProcess, NOBODY, startBrokerd } from "../lib/brokerd.js";
import { cgroupMount as mount, removeTree } from "../lib/cgroups.js";

const AGENT = join(dirname(fileURLToPath(import.meta.url)), "..", "hostile", "agents", "cgroup-identity.js");
const POD_A = "5b0e7f4c-1a2b-4c3d-8e9f-00000000000a";
const POD_B = "5b0e7f4c-1a2b-4c3d-8e9f-00000000000b";
const CLAIM = "9a8b7c6d-0000-4000-8000-0000000000c1";
const UID_A = 60011;
const UID_B = 60012;
/** A user with a delegated cgroup subtree (as systemd delegates user@N.service), who forges pod A's path in it. */
const FORGER = 60013;

const POLICY = `version: 1
rules:
  - name: dra-claims
    match: { claims: true }
    devices: ["sim*"]
    regions: [BAR2]
    attributes: [WC]
    prot: [rw]
`;

const ROOT = mount ? join(mount, `vfio-broker-claims-${process.pid}`) : "";
const podCgroup = (pod: string, container: string) =>
  join(
    ROOT,
    "kubepods.slice/kubepods-besteffort.slice",
    `kubepods-besteffort-pod${pod.replaceAll("-", "_")}.slice`,
    `cri-containerd-${container.repeat(64 / container.length)}.scope`,
  );
const CG_A = podCgroup(POD_A, "a1");
const CG_A2 = podCgroup(POD_A, "a2");
const CG_B = podCgroup(POD_B, "b1");
const DELEGATED = join(ROOT, `user.slice/user-${FORGER}.slice/user@${FORGER}.service`);
/** Pod A's container path, as the forger makes it below its own delegated directory. */
const FORGED_REL = relative(ROOT, podCgroup(POD_A, "f0"));
/** Where the second brokerd runs, in a cgroup namespace of its own (as in a container on cgroup v2). */
const NS_CGROUP = join(ROOT, "system.slice/vfio-brokerd-ns.scope");
const IN_OWN_CGROUP_NS = [
  "sh",
  "-c",
  'echo $$ > "$0/cgroup.procs" && exec unshare --cgroup -- "$@"',
  NS_CGROUP,
];

interface Held {
  cgroup: string;
  podUid: string;
  hello: string;
  open: string;
  map: Record<string, number>;
  messages: string[];
}

/**
 * A workload process in cgroup `cg` as `uid` (in `cg`/`rel`, which it makes itself, when given):
 * opens `device`, maps one page of BAR2 WC, holds.
 */
async function workload(b: BrokerProcess, cg: string, uid: number, device = "sim0", rel = "") {
  const s: Spawned = spawnAs(0, [AGENT, "hold", b.socket, cg, String(uid), rel, device, "2", "1"]);
  const t0 = Date.now();
  while (!s.out().includes('"phase":"holding"')) {
    if (s.child.exitCode !== null || Date.now() - t0 > 60_000)
      throw new Error(`the workload did not get to hold:\n${s.out()}\n${s.err()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const held = JSON.parse(
    s
      .out()
      .split("\n")
      .find((l) => l.includes('"phase":"holding"'))!,
  ) as Held;
  return {
    held,
    mapped: held.open === "OK" && held.map.OK === 1,
    async stop() {
      s.child.kill("SIGTERM");
      await s.exited;
    },
  };
}

const binding = (over: Record<string, unknown> = {}) => ({
  claim: {
    claimUid: CLAIM,
    namespace: "ml",
    claimName: "nic",
    podUids: [POD_A],
    deviceIds: ["sim0"],
    ...over,
  },
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "OK";
  } catch (e) {
    return String((e as { code?: number }).code);
  }
}

describe("e2e: Kubernetes claims bound through AdminService", () => {
  let b: BrokerProcess;
  let admin: ReturnType<typeof createClient<typeof AdminService>>;
  before(async () => {
    assert.ok(mount, "no cgroup2 mount in /proc/self/mountinfo: this test needs cgroup v2");
    for (const cg of [CG_A, CG_A2, CG_B, DELEGATED, NS_CGROUP]) mkdirSync(cg, { recursive: true });
    // What systemd chowns for Delegate=yes with User=: the directory and the files to manage it.
    for (const f of ["", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"])
      chownSync(join(DELEGATED, f), FORGER, FORGER);
    b = await startBrokerd({ policyText: POLICY, args: ["--ticket-ttl-ms", "600000"] });
    admin = createClient(AdminService, `unix:${b.adminSocket}`);
  });
  after(async () => {
    admin?.close();
    await b?.stop();
    if (ROOT) removeTree(ROOT);
  });

  it("a bound claim's device goes to exactly its pod; kill -9 and a restart keep the binding; unbind revokes", {
    timeout: 180_000,
  }, async () => {
    const before = await workload(b, CG_A, UID_A);
    await before.stop();
    assert.equal(before.held.hello, "PERMISSION_DENIED", "nothing is granted before the claim is bound");

    // Refused binds: a device brokerd does not serve, a bad UID, too many pods.
    assert.equal(await code(admin.bindClaim(binding({ deviceIds: ["sim9"] }))), "5"); // NOT_FOUND
    assert.equal(await code(admin.bindClaim(binding({ claimUid: "x" }))), "3"); // INVALID_ARGUMENT
    const many = Array.from(
      { length: 257 },
      (_, i) => `5b0e7f4c-1a2b-4c3d-8e9f-${String(i).padStart(12, "0")}`,
    );
    assert.equal(await code(admin.bindClaim(binding({ podUids: many }))), "3");

    const first = await admin.bindClaim(binding());
    const again = await admin.bindClaim(binding());
    assert.deepEqual([first.changed, again.changed], [true, false], "binding is idempotent");

    const a = await workload(b, CG_A, UID_A);
    const aOther = await workload(b, CG_A2, UID_A, "sim1");
    const other = await workload(b, CG_B, UID_B);
    await aOther.stop();
    await other.stop();
    assert.equal(a.held.podUid, POD_A, "the pod UID brokerd read from the cgroup");
    assert.equal(a.mapped, true, `the bound pod maps sim0: ${JSON.stringify(a.held)}`);
    assert.equal(aOther.mapped, false, "the bound pod gets no device its claim does not bind");
    assert.equal(other.held.hello, "PERMISSION_DENIED", "another pod gets nothing");

    // kill -9 while pod A holds, and start again on the same state.
    const exited = new Promise((r) => b.proc.once("exit", r));
    b.proc.kill("SIGKILL");
    await exited;
    admin.close();
    b = await startBrokerd({ policyText: POLICY, args: ["--ticket-ttl-ms", "600000"], dir: b.dir });
    admin = createClient(AdminService, `unix:${b.adminSocket}`);
    const listed = (await admin.listClaims({})).claims;
    assert.deepEqual(
      listed.map((c) => [c.claimUid, c.namespace, c.claimName, c.podUids, c.deviceIds]),
      [[CLAIM, "ml", "nic", [POD_A], ["sim0"]]],
    );
    const a2 = await workload(b, CG_A2, UID_A);
    assert.equal(a2.mapped, true, `after the restart the pod still maps sim0: ${JSON.stringify(a2.held)}`);

    const sessionsOfA = async () =>
      (await admin.listSessions({})).sessions.filter((s) => s.identity?.podUid === POD_A).length;
    const liveBefore = await sessionsOfA();
    const unbound = await admin.unbindClaim({ claimUid: CLAIM });
    const liveAfter = await sessionsOfA();
    const unboundAgain = await admin.unbindClaim({ claimUid: CLAIM });
    const after = await workload(b, CG_A, UID_A);
    await after.stop();
    await a.stop();
    await a2.stop();
    report("claims", {
      beforeBind: before.held.hello,
      bound: { sim0: a.held.map, sim1: aOther.held.open, otherPod: other.held.hello },
      afterRestart: a2.held.map,
      unbind: unbound.revoked,
      sessionsOfPod: { before: liveBefore, after: liveAfter },
    });
    assert.equal(liveBefore, 2, "the restored session and the new one");
    assert.equal(unbound.wasBound, true);
    assert.equal(unbound.revoked?.sessionsEnded, 2, "both of the pod's sessions lose the claim's grant");
    assert.equal(unbound.revoked?.mappingsRevoked, 2);
    assert.equal(liveAfter, 0);
    assert.equal(unboundAgain.wasBound, false, "unbinding is idempotent");
    assert.equal(after.held.hello, "PERMISSION_DENIED", "after unbind the pod gets nothing");
    const journal = readFileSync(b.journal, "utf8").split("\n");
    assert.ok(
      journal.some((l) => l.includes("claim-unprepared")),
      "the journal says why",
    );
    const unbindLine = journal.find((l) => l.includes('"claim.unbind"'));
    assert.ok(unbindLine, "the unbind is journaled");
    assert.match(unbindLine, new RegExp(`"claimUid":"${CLAIM}".*"sessionsEnded":2`));
  });

  it("a pod path forged in a user's delegated cgroup gets nothing from a bound claim", {
    timeout: 120_000,
  }, async () => {
    await admin.bindClaim(binding());
    const forged = await workload(b, DELEGATED, FORGER, "sim0", FORGED_REL);
    const real = await workload(b, CG_A, UID_A);
    await forged.stop();
    await real.stop();
    await admin.unbindClaim({ claimUid: CLAIM });
    report("claims: forged pod path", { forged: forged.held.hello, real: real.held.map });
    assert.ok(forged.held.cgroup.endsWith(FORGED_REL), `the forger moved into ${forged.held.cgroup}`);
    assert.equal(forged.held.hello, "PERMISSION_DENIED", `the forged path: ${JSON.stringify(forged.held)}`);
    assert.equal(real.mapped, true, "the pod's own cgroup, at the same time");
  });

  it("brokerd in a cgroup namespace of its own reads pods through the host's cgroup mount", {
    timeout: 120_000,
  }, async () => {
    const nb = await startBrokerd({ policyText: POLICY, wrap: IN_OWN_CGROUP_NS });
    const nadmin = createClient(AdminService, `unix:${nb.adminSocket}`);
    try {
      // A cgroup namespace of its own, rooted at its own cgroup.
      assert.notEqual(readlinkSync(`/proc/${nb.pid}/ns/cgroup`), readlinkSync("/proc/self/ns/cgroup"));
      assert.match(
        readFileSync(`/proc/${nb.pid}/cgroup`, "utf8"),
        new RegExp(`^0::/${relative(mount!, NS_CGROUP)}$`, "m"),
      );
      await nadmin.bindClaim(binding());
      const real = await workload(nb, CG_A, UID_A);
      const forged = await workload(nb, DELEGATED, FORGER, "sim0", FORGED_REL);
      const listed = (await nadmin.listSessions({})).sessions.find(
        (x) => x.identity?.uid === UID_A,
      )?.identity;
      await real.stop();
      await forged.stop();
      report("claims: brokerd in its own cgroup namespace", {
        real: real.held.map,
        forged: forged.held.hello,
        cgroup: listed?.cgroup,
      });
      assert.equal(real.held.podUid, POD_A, `the pod is read: ${JSON.stringify(real.held)}`);
      assert.equal(real.mapped, true);
      assert.equal(listed?.cgroup, `/${relative(mount!, CG_A)}`, "the path in the host's terms");
      assert.equal(forged.held.hello, "PERMISSION_DENIED", "the trust rule still applies there");
    } finally {
      nadmin.close();
      await nb.stop();
    }
  });

  it("a caller that is not root or in the admin group is refused by brokerd itself, even where it can reach admin.sock", {
    timeout: 60_000,
  }, async () => {
    // The file modes are the first wall (the private dir is 0700); open them to test the second.
    chmodSync(b.privateDir, 0o711);
    chmodSync(b.adminSocket, 0o666);
    const script = `
      import { AdminService, createClient } from "@vfio-broker/proto";
      const admin = createClient(AdminService, "unix:${b.adminSocket}");
      const claim = ${JSON.stringify(binding().claim)};
      const out = {};
      for (const [name, call] of [["bind", () => admin.bindClaim({ claim })], ["list", () => admin.listClaims({})]])
        out[name] = await call().then(() => "OK", (e) => String(e.code));
      admin.close();
      console.log(JSON.stringify(out));`;
    const s = spawnAs(NOBODY, ["--input-type=module", "-e", script]);
    await s.exited;
    chmodSync(b.adminSocket, 0o660);
    chmodSync(b.privateDir, 0o700);
    const got = JSON.parse(s.out().trim().split("\n").pop() ?? "{}");
    report("claims: not an admin", got);
    assert.deepEqual(got, { bind: "7", list: "7" }, s.err()); // PERMISSION_DENIED
    assert.deepEqual((await admin.listClaims({})).claims, [], "nothing was bound");
  });
});
