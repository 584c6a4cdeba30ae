// Tests for load.ts and the shipped example policies under deploy/policy/.
import assert from "node:assert/strict";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { authorizeAccess, authorizeMapping, limitsFor } from "./evaluate.js";
import { loadPolicyFile } from "./load.js";
import { PolicyError } from "./schema.js";

function repoRoot(): string {
  const fromEnv = process.env.VFIO_BROKER_REPO;
  if (fromEnv) return fromEnv;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "deploy"))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the repository root (a directory containing deploy/)");
    dir = up;
  }
}

const policyDir = join(repoRoot(), "deploy", "policy");

test("every deploy/policy file parses", () => {
  const files = readdirSync(policyDir).filter((f) => /\.(ya?ml|json)$/.test(f));
  assert.ok(files.length >= 3, `expected example policies in ${policyDir}`);
  for (const f of files) {
    const p = loadPolicyFile(join(policyDir, f));
    assert.ok(p.rules.length > 0, `${f} has rules`);
    assert.equal(p.source, join(policyDir, f));
  }
});

test("sim-local.yaml and sim-local.json are equivalent and allow what npm start needs", () => {
  const yaml = loadPolicyFile(join(policyDir, "sim-local.yaml"));
  const json = loadPolicyFile(join(policyDir, "sim-local.json"));
  assert.deepEqual(
    yaml.rules.map((r) => ({ ...r, line: 0 })),
    json.rules.map((r) => ({ ...r, line: 0 })),
  );
  const someone = { uid: 65534, gid: 65534, pid: 1, cgroup: "", cgroupTrusted: false };
  for (const attribute of ["UC", "WC"] as const) {
    for (const prot of ["r", "rw"] as const) {
      for (const region of ["BAR0", "BAR2", "CONFIG"]) {
        assert.equal(
          authorizeMapping(yaml, someone, { device: "sim1", region, attribute, prot }).allow,
          true,
        );
      }
    }
  }
  assert.equal(
    authorizeMapping(yaml, someone, { device: "sim0", region: "BAR0", attribute: "WB", prot: "r" }).allow,
    false,
  );
  assert.equal(authorizeAccess(yaml, someone, { device: "sim0", region: "BAR0", write: true }).allow, true);
  assert.equal(
    authorizeMapping(yaml, someone, { device: "0000:00:01.0", region: "BAR0", attribute: "UC", prot: "r" })
      .allow,
    false,
  );
});

test("production-example.yaml: tight limits, WC on one BDF for the container, no device fd anywhere", () => {
  const p = loadPolicyFile(join(policyDir, "production-example.yaml"));
  assert.ok(p.rules.every((r) => !r.allowDeviceFd));
  const container = { uid: 0, gid: 0, pid: 1, cgroup: "/system.slice/docker-abc.scope", cgroupTrusted: true };
  const ok = authorizeMapping(p, container, {
    device: "0000:3b:00.0",
    region: "BAR2",
    attribute: "WC",
    prot: "rw",
  });
  assert.equal(ok.allow && ok.rule.name, "feed-handler-wc");
  assert.equal(limitsFor(p, container, "0000:3b:00.0").bytes, 64n << 20n);
  assert.equal(
    authorizeMapping(p, container, { device: "0000:3b:00.0", region: "BAR0", attribute: "UC", prot: "r" })
      .allow,
    false,
  );
  assert.equal(strangerMayMap(p), false);
  // The pod rule: that pod's containers, by the UID in their cgroup path; not another pod's.
  const inPod = (uid: string, cgroupTrusted = true) => ({
    uid: 0,
    gid: 0,
    pid: 1,
    cgroup: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replaceAll("-", "_")}.slice/cri-containerd-${"4f3c2b1a".repeat(8)}.scope`,
    cgroupTrusted,
  });
  const wc = { device: "0000:af:00.0", region: "BAR2", attribute: "WC", prot: "rw" } as const;
  const pod = authorizeMapping(p, inPod("0c4f2a9e-1111-2222-3333-444455556666"), wc);
  assert.equal(pod.allow && pod.rule.name, "inference-pod-wc");
  assert.equal(authorizeMapping(p, inPod("0c4f2a9e-1111-2222-3333-444455556667"), wc).allow, false);
  // The same path in a cgroup a user could have named (identity/cgroup-trust.ts): no pod, no rule.
  const forged = authorizeMapping(p, inPod("0c4f2a9e-1111-2222-3333-444455556666", false), wc);
  assert.equal(forged.allow, false);
});

function strangerMayMap(p: ReturnType<typeof loadPolicyFile>): boolean {
  const stranger = {
    uid: 1000,
    gid: 1000,
    pid: 1,
    cgroup: "/user.slice/user-1000.slice/session-1.scope",
    cgroupTrusted: true,
  };
  return authorizeMapping(p, stranger, {
    device: "0000:3b:00.0",
    region: "BAR2",
    attribute: "WC",
    prot: "rw",
  }).allow;
}

test("loadPolicyFile: unreadable and invalid files throw PolicyError naming the file", () => {
  const dir = mkdtempSync(join(tmpdir(), "policy-test-"));
  try {
    const missing = join(dir, "missing.yaml");
    assert.throws(
      () => loadPolicyFile(missing),
      (e: unknown) =>
        e instanceof PolicyError &&
        e.errors.length === 1 &&
        e.errors[0] === `${missing}: cannot read the policy file: no such file; check the path`,
    );
    assert.throws(
      () => loadPolicyFile(dir),
      (e: unknown) => e instanceof PolicyError && /not a regular file/.test(e.errors[0]!),
    );
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "version: 1\nrules:\n  - nam: x\n");
    assert.throws(
      () => loadPolicyFile(bad),
      (e: unknown) =>
        e instanceof PolicyError &&
        e.errors.some((m) => m.startsWith(`${bad}:3:5: rules[0]: unknown key "nam"`)),
    );
    // A policy file others can rewrite is refused, with the command that fixes it.
    const loose = join(dir, "loose.yaml");
    writeFileSync(loose, readFileSync(join(policyDir, "sim-local.yaml")));
    chmodSync(loose, 0o666);
    assert.throws(
      () => loadPolicyFile(loose),
      (e: unknown) =>
        e instanceof PolicyError &&
        e.errors[0] ===
          `${loose}: is writable by every user (mode 0666); make it writable by its owner only: chmod go-w ${loose}`,
    );
    chmodSync(loose, 0o664);
    assert.throws(() => loadPolicyFile(loose), /writable by its group \(mode 0664\)/);
    chmodSync(loose, 0o644);
    assert.equal(loadPolicyFile(loose).rules.length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
