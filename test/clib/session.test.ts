// libvfio-broker's session API (clients/c/include/vfio-broker.h) end to end: brokerd as its own
// process, the C test tool clients/c/tests/e2e.c (the library's sources under ASan + UBSan) run as
// uid 65534, and this test acting on brokerd between its steps. A workload connects, lists, opens
// sim0, maps BAR2 WC and writes, and a gRPC session of another uid reads the bytes back; several
// ranges map and release in one exchange each; every fault gets its own code and message and
// leaves no fd behind; an operator's revocation arrives on the event fd and leaves the address
// inaccessible; brokerd restarted mid-session is resumed and the mapping still reaches the device;
// brokerd killed ends the session; a hung brokerd times a call out and vfb_resume then says the
// library's close ended the session (not a restart); two sessions work in two threads at once.
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { AdminService, createClient, Layout } from "@vfio-broker/proto";
import { brokerClient } from "../e2e/agents/raw.js";
import { type BrokerProcess, NOBODY, REPO, startBrokerd } from "../lib/brokerd.js";

const CLIB = join(REPO, "clients/c");
const E2E = join(CLIB, "build/asan/vfb-e2e");
const E2E_PLAIN = join(CLIB, "build/test/vfb-e2e");
const VALGRIND = [
  "-q",
  "--error-exitcode=99",
  "--leak-check=full",
  "--errors-for-leak-kinds=definite,indirect",
];
const PAGE = 4096n;

// uid 65534 may open sim0 only, with 8 MiB mapped at most; root (this test's reader) every sim device.
const POLICY = `version: 1
rules:
  - name: nobody
    match: { uids: [${NOBODY}] }
    devices: ["sim0"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
    limits: { bytes: 8MiB }
  - name: root
    match: { uids: [0] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
`;

/** The C tool as uid 65534: its lines one by one, and a line to send when it awaits. */
function tool(scenario: string, b: BrokerProcess, underValgrind = false) {
  const [cmd, args] = underValgrind
    ? ["valgrind", [...VALGRIND, E2E_PLAIN, scenario, b.socket]]
    : [E2E, [scenario, b.socket]];
  const child: ChildProcessWithoutNullStreams = spawn(cmd, args, {
    uid: NOBODY,
    gid: NOBODY,
    env: { ...process.env, ASAN_OPTIONS: "detect_leaks=1:abort_on_error=1" },
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  const all = () => `${out}\n${err}`;
  return {
    /** The next line starting with `key` (the ones before it are kept for the failure message). */
    async line(key: string): Promise<string> {
      for (;;) {
        const l = await lines.next();
        if (l.done) throw new Error(`no "${key}" line from the tool:\n${all()}`);
        out += `${l.value}\n`;
        assert.ok(!l.value.startsWith("FAIL"), all());
        if (l.value.startsWith(`${key} `) || l.value === key) return l.value.slice(key.length + 1);
      }
    },
    send(line: string) {
      child.stdin.write(`${line}\n`);
    },
    /** The next line, whatever it is (FAIL lines included). */
    async next(): Promise<string> {
      const l = await lines.next();
      if (l.done) throw new Error(`the tool ended early:\n${all()}`);
      out += `${l.value}\n`;
      return l.value;
    },
    async exit(): Promise<void> {
      assert.equal(await exited, 0, all());
    },
    /** The closing line, "N passed, 0 failed", and exit status 0. */
    async done(): Promise<void> {
      for (;;) {
        const l = await this.next();
        assert.ok(!l.startsWith("FAIL"), all());
        if (/^\d+ passed, \d+ failed$/.test(l)) {
          assert.match(l, /^[1-9]\d* passed, 0 failed$/, all());
          break;
        }
      }
      assert.equal(await exited, 0, all());
    },
    output: all,
  };
}

/** "k=v k2=v2" as an object. */
function fields(s: string): Record<string, string> {
  return Object.fromEntries(s.split(" ").map((kv) => kv.split("=") as [string, string]));
}

/** The fds line's two counts are equal. */
async function noFdLeft(t: ReturnType<typeof tool>) {
  const f = fields(await t.line("fds"));
  assert.equal(f.after, f.before, `fds: ${t.output()}`);
}

describe("libvfio-broker's session API against a real brokerd", () => {
  let b: BrokerProcess;
  before(async () => {
    const built = spawnSync("make", ["-s", "-C", CLIB, "build/asan/vfb-e2e", "build/test/vfb-e2e"], {
      encoding: "utf8",
    });
    assert.equal(built.status, 0, `${built.stdout}${built.stderr}`);
    b = await startBrokerd({ policyText: POLICY });
  });
  after(() => b?.stop());

  /** Bytes of sim0 BAR2 at `offset`, read by a gRPC session of this (root) process. */
  async function readBar2(offset: bigint, length: number): Promise<Buffer> {
    const rpc = brokerClient(b.socket);
    try {
      await rpc.hello({ clientName: "reader" });
      const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
      const base = df.regions.find((r) => r.region?.index === 2)!.cookie;
      const read = await rpc.readRegion({ deviceFileId: df.deviceFileId, offset: base + offset, length });
      return Buffer.from(read.data);
    } finally {
      rpc.close();
    }
  }

  async function allMappings() {
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      return (await admin.listMappings({})).mappings;
    } finally {
      admin.close();
    }
  }

  async function mappingsOf(sessionId: string) {
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      return (await admin.listMappings({})).mappings.filter((m) => m.sessionId === sessionId);
    } finally {
      admin.close();
    }
  }

  it("connects, lists, opens, maps BAR2 WC and writes; another process reads it back; batches map and release", {
    timeout: 120_000,
  }, async () => {
    const t = tool("flow", b);
    const session = await t.line("session");
    const hello = fields(await t.line("hello"));
    assert.equal(hello.uid, String(NOBODY), "the identity is the kernel's");
    assert.equal(hello.page, "4096");
    assert.equal(hello.token, "32");
    assert.deepEqual(await t.line("devices"), "sim0", "the policy lets uid 65534 see sim0 only");
    const regions = fields(await t.line("regions"));
    assert.deepEqual([regions.bar2name, regions.bar2size], ["BAR2", String(16 << 20)]);
    assert.equal(regions.bar2attrs, "3", "BAR2 can be UC or WC");
    assert.equal(regions.bar0attrs, "1", "BAR0 is UC only");
    const m = fields(await t.line("mapped"));
    assert.deepEqual(
      [m.attr, m.backing, m.region, m.offset, m.length, m.status],
      ["2", "5", "2", "12288", "4096", "0"],
    );
    await t.line("await");
    assert.equal((await readBar2(3n * PAGE + 0x100n, 8)).toString("hex"), "cafef00d0badc0de");
    assert.equal((await mappingsOf(session)).length, 1);
    t.send("go");
    const many = fields(await t.line("many"));
    assert.deepEqual([many.attrs, many.prots], ["2,2,1", "3,1,3"]);
    await t.line("await");
    assert.equal((await mappingsOf(session)).length, 0, "vfb_unmap and vfb_unmap_many released everything");
    assert.equal((await readBar2(0n, 1)).toString("hex"), "5a");
    t.send("go");
    await t.line("await");
    assert.deepEqual(
      (await allMappings()).map((x) => `${x.sessionId} ${x.mapping?.state}`),
      [],
      "vfb_disconnect with a page mapped left nothing held (not even a revoking hold)",
    );
    t.send("go");
    await noFdLeft(t);
    await t.done();
  });

  it("the same flow once under valgrind (memcheck): no error, no leak, no fd left", {
    timeout: 180_000,
  }, async () => {
    const t = tool("flow", b, true);
    for (;;) {
      const l = await t.next();
      if (l.startsWith("await ")) t.send("go");
      if (l.startsWith("fds ")) {
        const f = fields(l.slice(4));
        assert.equal(f.after, f.before, t.output());
        break;
      }
    }
    await t.done();
  });

  describe("each fault has its own code, a message that says what to do, and leaves no fd", () => {
    // One run of the tool's faults scenario; each fault is then its own test of its line
    // ("fault NAME CODE FDS_BEFORE FDS_AFTER MESSAGE").
    const lines = new Map<string, string>();
    let heldAfterBatch = -1;
    let fallback = "";
    let tail = "";
    before(async () => {
      const t = tool("faults", b);
      for (;;) {
        const line = await t.next();
        if (line.startsWith("fault ")) lines.set(line.split(" ")[1]!, line);
        else if (line.startsWith("fallback ")) fallback = line;
        else if (line.startsWith("await ")) {
          const session = (t.output().match(/^session (\S+)$/m) ?? [])[1]!;
          heldAfterBatch = (await mappingsOf(session)).length;
          t.send("go");
        } else if (/^\d+ passed, \d+ failed$/.test(line)) {
          tail = line;
          break;
        }
      }
      await t.exit();
    });
    const want: Record<string, [string, RegExp]> = {
      "not-running": [
        "VFB_E_CONNECT",
        /the directory \/nonexistent-vfb-test does not exist .*from the argument.*is brokerd running/,
      ],
      "unknown-device": ["VFB_E_UNKNOWN_DEVICE", /^NOT_FOUND: no device "nope0"; ListDevices/],
      permission: ["VFB_E_PERMISSION", /^PERMISSION_DENIED: /],
      unaligned: ["VFB_E_UNALIGNED", /multiples of the 4096-byte page/],
      "wc-on-uc-only": ["VFB_E_WC_UNAVAILABLE", /cannot map sim0 BAR0 write-combining.*VFB_ATTR_FALLBACK_UC/],
      "no-such-region": ["VFB_E_NO_SUCH_REGION", /sim0 has no region 5; vfb_region_at/],
      "unmappable-region": ["VFB_E_NO_SUCH_REGION", /sim0 has no mappable region 7/],
      "out-of-range": ["VFB_E_OUT_OF_RANGE", /passes the end of sim0 BAR2/],
      quota: ["VFB_E_QUOTA", /^RESOURCE_EXHAUSTED: .*quota/],
      "batch-quota": [
        "VFB_E_QUOTA",
        /^range 1: RESOURCE_EXHAUSTED: .*nothing was mapped \(the 1 granted were released\)/,
      ],
    };
    for (const [name, [code, message]] of Object.entries(want)) {
      it(name, () => {
        const line = lines.get(name);
        assert.ok(line, `no fault line for ${name}: ${[...lines.values()].join("\n")}`);
        const [, , got, fdsBefore, fdsAfter, ...words] = line.split(" ");
        assert.equal(got, code, line);
        assert.match(words.join(" "), message, line);
        assert.equal(fdsAfter, fdsBefore, `${name} left an fd: ${line}`);
      });
    }
    it("WC with VFB_ATTR_FALLBACK_UC on a UC-only region is granted UC", () => {
      assert.equal(fallback, "fallback VFB_OK attr=1");
    });
    it("a refused batch leaves nothing held in brokerd, and the tool's own checks pass", () => {
      assert.equal(heldAfterBatch, 0, "the refused batch's granted item was given back");
      assert.match(tail, /^\d+ passed, 0 failed$/);
    });
  });

  it("an operator's revocation arrives on the event fd, with its reason, and the address is then inaccessible", {
    timeout: 120_000,
  }, async () => {
    const t = tool("revoke", b);
    const m = fields(await t.line("mapped"));
    assert.equal(m.perms, "rw-s");
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      await admin.revokeMapping({
        deviceFileId: BigInt(m.df!),
        cookie: BigInt(m.cookie!),
        reason: "clib test",
      });
    } finally {
      admin.close();
    }
    const ev = await t.line("event");
    assert.match(ev, /^kind=1 reason=operator mine=1 /);
    const f = fields(ev.split(" message=")[0]!);
    assert.deepEqual(
      [f.cookie, f.device, f.status, f.perms, f.inaccessible],
      [m.cookie, "sim0", "VFB_E_MAPPING_REVOKED", "---p", "1"],
    );
    await noFdLeft(t);
    await t.done();
  });

  it("two sessions in two threads at once", { timeout: 120_000 }, async () => {
    const t = tool("threads", b);
    assert.equal(fields(await t.line("threads")).bad, "0");
    await noFdLeft(t);
    await t.done();
  });
});

describe("libvfio-broker across brokerd restarts", () => {
  it("brokerd restarted mid-session: VFB_E_RESTARTED, then vfb_resume, and the mapping still reaches the device", {
    timeout: 180_000,
  }, async () => {
    let b = await startBrokerd({ policyText: POLICY });
    try {
      const t = tool("restart", b);
      await t.line("mapped");
      await t.line("await");
      const exited = new Promise((r) => b.proc.once("exit", r));
      b.proc.kill("SIGTERM");
      await exited;
      b = await startBrokerd({ dir: b.dir, policyText: POLICY });
      t.send("go");
      assert.equal(await t.line("event"), "1 kind=3 reason=restart");
      assert.match(await t.line("call"), /^VFB_E_RESTARTED brokerd said it is restarting.*vfb_resume/);
      // The session is down: the status says so, the mapping is left as it was (brokerd keeps it).
      assert.equal(await t.line("status"), "VFB_E_RESTARTED rw-s");
      const r = fields(await t.line("resume"));
      assert.deepEqual([r.rc, r.resumed, r.status], ["VFB_OK", "1", "VFB_OK"]);
      await t.line("await");
      const bytes = await readBar2(5n * PAGE, 7);
      assert.equal(
        bytes.toString(),
        "resumed",
        "a write through the old address reaches the restarted brokerd's device",
      );
      t.send("go");
      await noFdLeft(t);
      await t.done();
    } finally {
      await b.stop();
    }

    async function readBar2(offset: bigint, length: number) {
      const rpc = brokerClient(b.socket);
      try {
        await rpc.hello({ clientName: "reader" });
        const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
        const base = df.regions.find((x) => x.region?.index === 2)!.cookie;
        return Buffer.from(
          (await rpc.readRegion({ deviceFileId: df.deviceFileId, offset: base + offset, length })).data,
        );
      } finally {
        rpc.close();
      }
    }
  });

  it("brokerd killed: VFB_E_CLOSED, the session-ended event (connection-lost), VFB_E_CONNECT on resume", {
    timeout: 120_000,
  }, async () => {
    const b = await startBrokerd({ policyText: POLICY });
    try {
      const t = tool("killed", b);
      await t.line("await");
      const exited = new Promise((r) => b.proc.once("exit", r));
      b.proc.kill("SIGKILL");
      await exited;
      t.send("go");
      assert.match(await t.line("call"), /^VFB_E_CLOSED brokerd closed the connection without a word/);
      assert.equal(await t.line("event"), "1 kind=3 reason=connection-lost");
      assert.equal(await t.line("status"), "VFB_E_CLOSED rw-s");
      assert.equal(await t.line("resume"), "VFB_E_CONNECT");
      assert.equal(await t.line("unmap"), "VFB_E_CLOSED");
      await noFdLeft(t);
      await t.done();
    } finally {
      await b.stop();
    }
  });

  it("brokerd hung: the call times out, and vfb_resume says the library's close ended the session (no restart)", {
    timeout: 120_000,
  }, async () => {
    const b = await startBrokerd({ policyText: POLICY });
    try {
      const t = tool("hung", b);
      await t.line("await");
      b.proc.kill("SIGSTOP");
      try {
        t.send("go");
        assert.equal(await t.line("call"), "VFB_E_TIMEOUT");
        assert.equal(await t.line("status"), "VFB_E_CLOSED");
        await t.line("await");
      } finally {
        b.proc.kill("SIGCONT");
      }
      t.send("go");
      const resume = await t.line("resume");
      assert.match(resume, /^VFB_E_RESUME_REFUSED .*the library closed its connection \(no reply from/);
      assert.doesNotMatch(resume, /restart/);
      await noFdLeft(t);
      await t.done();
    } finally {
      await b.stop();
    }
  });
});
