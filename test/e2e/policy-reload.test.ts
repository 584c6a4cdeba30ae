// Policy hot reload: SIGHUP and the admin ReloadPolicy call both re-read the file; a bad file keeps
// the old policy and reports every error with its line; sessions see the new policy on their next call.
import assert from "node:assert/strict";
import { chmodSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import { type BrokerProcess, startBrokerd, until } from "../lib/brokerd.js";
import { brokerClient, codeOf } from "./agents/raw.js";

const rule = (uid: number) => `version: 1
rules:
  - name: only-${uid}
    match: { uids: [${uid}] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
`;

describe("policy reload", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd({ policyText: rule(0) });
  });
  after(async () => {
    await b?.stop();
  });

  it("SIGHUP applies a new policy to live sessions; a bad file keeps the old one", async () => {
    const c = brokerClient(b.socket);
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      assert.equal((await c.listDevices({})).devices.length, 2);
      writeFileSync(b.policyPath, rule(4242));
      // logrotate's way: move the journal away, then SIGHUP; brokerd writes to a new file.
      renameSync(b.journal, `${b.journal}.1`);
      b.proc.kill("SIGHUP");
      await until("root to be denied", async () => {
        try {
          await c.listDevices({});
          return false;
        } catch (e) {
          return codeOf(e) === "PERMISSION_DENIED";
        }
      });
      // A broken file through the admin call: refused with line-precise errors, old policy kept.
      writeFileSync(
        b.policyPath,
        "version: 1\nrules:\n  - name: x\n    match: { any: true }\n    devices: [sim0]\n    regions: [BAR9]\n",
      );
      const r = await admin.reloadPolicy({});
      assert.equal(r.ok, false);
      assert.ok(
        r.errors.some((e) => /:6:\d+: .*BAR9/.test(e)),
        r.errors.join("\n"),
      );
      await assert.rejects(c.listDevices({}), /PERMISSION_DENIED|no rule/);
      // Back to a root policy through the admin call.
      writeFileSync(b.policyPath, rule(0));
      const ok = await admin.reloadPolicy({});
      assert.equal(ok.ok, true, ok.errors.join("\n"));
      assert.equal(ok.rules, 1);
      assert.equal((await c.listDevices({})).devices.length, 2);
      const h = await admin.getHealth({});
      assert.equal(h.policyDigest, ok.digest);
      assert.match(readFileSync(`${b.journal}.1`, "utf8"), /"event":"session.open"/);
      assert.match(readFileSync(b.journal, "utf8"), /"event":"policy.reload","ok":true/);
    } finally {
      c.close();
      admin.close();
    }
  });

  it("the admin socket refuses a non-root, non-admin-group peer", async () => {
    const { run, NOBODY, REPO } = await import("../lib/brokerd.js");
    const script = `import { AdminService, createClient } from "@vfio-broker/proto";
const a = createClient(AdminService, "unix:${b.adminSocket}");
a.getHealth({}, { timeoutMs: 3000 }).then(() => console.log("OK"), (e) => console.log("ERR", e.code));`;
    const r = await run(process.execPath, ["--input-type=module", "-e", script], {
      uid: NOBODY,
      env: { NODE_PATH: REPO },
    });
    // The socket is 0600 root: connect() itself is refused (UNAVAILABLE = 14).
    assert.match(r.stdout + r.stderr, /ERR 14|EACCES/);
  });

  it("admin group: members may use AdminService; a non-member who reaches the socket is refused on every call", async () => {
    const { run, NOBODY, startBrokerd: start } = await import("../lib/brokerd.js");
    const own = await start({ args: ["--admin-gid", "4242"] });
    try {
      // Defence in depth: even if the socket's file mode were loosened, identity decides.
      chmodSync(own.adminSocket, 0o666);
      const script = `import { AdminService, createClient } from "@vfio-broker/proto";
const a = createClient(AdminService, "unix:${own.adminSocket}");
a.getHealth({}, { timeoutMs: 3000 }).then((h) => console.log("OK", h.status), (e) => console.log("ERR", e.code, e.details));`;
      const member = await run(process.execPath, ["--input-type=module", "-e", script], {
        uid: NOBODY,
        gid: 4242,
      });
      assert.match(member.stdout, /^OK SERVING/, member.stderr);
      // A non-member cannot even reach admin.sock: the private dir is 0710 root:4242.
      assert.equal(statSync(own.privateDir).mode & 0o7777, 0o710);
      assert.equal(statSync(own.privateDir).gid, 4242);
      const outside = await run(process.execPath, ["--input-type=module", "-e", script], { uid: NOBODY });
      assert.match(outside.stdout, /^ERR 14/, outside.stderr);
      // With the directory loosened too, brokerd's own check still refuses it on every call.
      chmodSync(own.privateDir, 0o711);
      const other = await run(process.execPath, ["--input-type=module", "-e", script], { uid: NOBODY });
      assert.match(other.stdout, /^ERR 7 uid 65534 is not root or in the admin group/, other.stderr);
    } finally {
      await own.stop();
    }
  });
});
