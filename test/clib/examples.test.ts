// libvfio-broker's examples (clients/c/examples), built by `make -C clients/c examples` through
// pkg-config only, run as uid 65534 against brokerd as its own process. vfb-map maps sim0 BAR2 WC
// and writes a value that a gRPC ReadRegion and a second vfb-map (read-only) both see; under
// valgrind it has no error, no leak and no fd of its own open at exit; held, it ends with exit 3
// and the reason when an operator revokes it; its errors are exit 1 with the library's code, its
// usage errors exit 2. vfb-driver-start maps sim1's WC and UC BARs, touches them, and in its own
// poll loop prints an operator's revocation of one with its reason (and releases it), a drain's
// health event, exits 0 on SIGTERM with as many fds open as at its start, and its session is gone
// from brokerd (and under valgrind: no error, leak or fd); an operator ending its session is
// printed, exit 1; after a brokerd restart (SIGTERM, grants kept; or SIGKILL, state restored) it
// takes its session back, both mappings held again, and still leaks no fd. vfb-map's errors: no brokerd, an unknown device, a missing region.
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { AdminService, createClient, Layout } from "@vfio-broker/proto";
import { brokerClient } from "../e2e/agents/raw.js";
import { type BrokerProcess, NOBODY, REPO, run, startBrokerd, until } from "../lib/brokerd.js";

const CLIB = join(REPO, "clients/c");
const VFB_MAP = join(CLIB, "build/examples/vfb-map");
const DRIVER = join(CLIB, "build/examples/vfb-driver-start");

const POLICY = `version: 1
rules:
  - name: everyone
    match: { any: true }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
`;

/** A program run as uid 65534 whose stdout lines are awaited one pattern at a time. */
function started(cmd: string, args: string[]) {
  const child: ChildProcess = spawn(cmd, args, {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  createInterface({ input: child.stdout! }).on("line", (l) => lines.push(l));
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  let closed = false;
  void exited.then(() => {
    closed = true;
  });
  const output = () => `stdout:\n${lines.join("\n")}\nstderr:\n${stderr}`;
  return {
    child,
    exited,
    output,
    stderr: () => stderr,
    /** The first line (from the start) matching re, waiting for it while the program runs. */
    async line(re: RegExp): Promise<RegExpMatchArray> {
      const end = Date.now() + 20_000;
      for (;;) {
        for (const l of lines) {
          const m = l.match(re);
          if (m) return m;
        }
        if (closed) throw new Error(`no line matches ${re}, and the program exited:\n${output()}`);
        if (Date.now() > end) throw new Error(`no line matches ${re} after 20 s:\n${output()}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
  };
}

describe("libvfio-broker's examples against brokerd, as uid 65534", () => {
  let b: BrokerProcess;
  let admin: ReturnType<typeof createClient<typeof AdminService>>;
  before(async () => {
    const made = spawnSync("make", ["-s", "-C", CLIB, "examples"], { encoding: "utf8" });
    assert.equal(made.status, 0, `${made.stdout}${made.stderr}`);
    b = await startBrokerd({ policyText: POLICY });
    admin = createClient(AdminService, `unix:${b.adminSocket}`);
  });
  after(async () => {
    admin?.close();
    await b?.stop();
  });

  it("vfb-map maps sim0 BAR2 WC and writes; gRPC ReadRegion and a second vfb-map read the value", async () => {
    const value = randomBytes(8).toString("hex");
    const writer = started(VFB_MAP, [
      ...["--socket", b.socket, "--attr", "wc", "--offset", "0x3000", "--length", "4K"],
      ...["--write", `0x100=${value}`, "--read", "0x100:8", "--hold", "sim0", "BAR2"],
    ]);
    await writer.line(/^holding the mapping/);
    await writer.line(/^attribute: +requested WC, effective WC$/);
    await writer.line(new RegExp(`^0x00000100  ${value.replace(/(..)(?!$)/g, "$1 ")} `));
    const rpc = brokerClient(b.socket);
    try {
      await rpc.hello({ clientName: "examples-reader" });
      const df = await rpc.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
      const base = df.regions.find((r) => r.region?.index === 2)!.cookie;
      const read = await rpc.readRegion({ deviceFileId: df.deviceFileId, offset: base + 0x3100n, length: 8 });
      assert.equal(Buffer.from(read.data).toString("hex"), value);
    } finally {
      rpc.close();
    }
    // WC too: brokerd refuses a second memory type on pages mapped WC (x86 PAT).
    const reader = await run(
      VFB_MAP,
      [
        ...["--socket", b.socket, "--attr", "wc", "--prot", "r", "--offset", "0x3000", "--length", "4096"],
        ...["--read", "0x100:8", "sim0", "2"],
      ],
      { uid: NOBODY },
    );
    assert.equal(reader.code, 0, reader.stderr);
    assert.match(reader.stdout, /^backing: +\S+ \(prot r\)$/m);
    assert.match(reader.stdout, new RegExp(`^0x00000100  ${value.replace(/(..)(?!$)/g, "$1 ")} `, "m"));
    writer.child.kill("SIGTERM");
    assert.equal(await writer.exited, 0, writer.output());
    await writer.line(/^released \(SIGTERM\)$/);
  });

  it("vfb-map under valgrind: no error, no leak, no fd of its own left open at exit", async () => {
    const r = await run(
      "valgrind",
      [
        ...["-q", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect"],
        ...["--track-fds=yes", VFB_MAP, "--socket", b.socket, "--attr", "wc", "--length", "8K"],
        ...["--write", "0x1000=0102030405060708", "--read", "0x1000:8", "sim0", "BAR2"],
      ],
      { uid: NOBODY, timeoutMs: 120_000 },
    );
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /^0x00001000 {2}01 02 03 04 05 06 07 08 /m);
    // --track-fds lists every fd open at exit: only those inherited from the parent may be there.
    const open = r.stderr
      .split(/\n(?===\d+== Open )/)
      .filter((b) => /Open (file descriptor|AF_UNIX socket)/.test(b));
    assert.deepEqual(
      open.filter((b) => !b.includes("<inherited from parent>")),
      [],
      r.stderr,
    );
  });

  it("vfb-map --hold: an operator's revocation ends it with exit 3 and the reason", async () => {
    const holder = started(VFB_MAP, [
      "--socket",
      b.socket,
      "--attr",
      "wc",
      "--length",
      "8K",
      "--hold",
      "sim0",
      "BAR2",
    ]);
    const cookie = BigInt((await holder.line(/^cookie: +(0x[0-9a-f]+)$/))[1]!);
    const dfId = BigInt((await holder.line(/^device: +sim0 \(device file (\d+)\)$/))[1]!);
    await holder.line(/^holding the mapping/);
    await admin.revokeMapping({ deviceFileId: dfId, cookie, reason: "examples test" });
    assert.equal(await holder.exited, 3, holder.output());
    await holder.line(/^revoked: operator$/);
  });

  it("vfb-map: no brokerd, an unknown device, a missing region are exit 1 with the library's code; a bad command line is exit 2", async () => {
    const unknown = await run(VFB_MAP, ["--socket", b.socket, "nosuch0", "BAR2"], { uid: NOBODY });
    assert.equal(unknown.code, 1, unknown.stderr);
    assert.match(unknown.stderr, /^vfb-map: nosuch0: .*VFB_E_UNKNOWN_DEVICE/);
    const nobroker = await run(
      VFB_MAP,
      ["--socket", join(b.dir, "no-brokerd-here", "broker.sock"), "sim0", "BAR2"],
      {
        uid: NOBODY,
      },
    );
    assert.equal(nobroker.code, 1, nobroker.stderr);
    assert.match(nobroker.stderr, /^vfb-map: connect: .*\(VFB_E_CONNECT\): .*is brokerd running/);
    const region = await run(VFB_MAP, ["--socket", b.socket, "sim0", "BAR5"], { uid: NOBODY });
    assert.equal(region.code, 1, region.stderr);
    assert.match(region.stderr, /^vfb-map: sim0 has no region BAR5 \(VFB_E_NO_SUCH_REGION\)$/m);
    const usage = await run(VFB_MAP, ["--attr", "wb", "sim0", "BAR2"], { uid: NOBODY });
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--attr wb: use uc or wc/);
    const help = await run(VFB_MAP, ["--help"]);
    assert.equal(help.code, 0);
    for (const flag of [
      "--offset",
      "--length",
      "--attr",
      "--prot",
      "--write",
      "--read",
      "--hold",
      "--hold-for",
    ])
      assert.ok(help.stdout.includes(flag), `--help documents ${flag}`);
  });

  it("vfb-driver-start maps, hears a revocation with its reason and a drain's health event, exits 0 on SIGTERM with no fd leaked", async () => {
    const driver = started(DRIVER, ["--socket", b.socket, "sim1"]);
    const session = (await driver.line(/^connected: session (\S+), uid 65534 /))[1]!;
    const dfId = BigInt((await driver.line(/^opened sim1: device file (\d+),/))[1]!);
    const wc = await driver.line(
      /^mapped BAR4: 4194304 bytes at \S+, asked WC, got WC, cookie (0x[0-9a-f]+)$/,
    );
    await driver.line(/^mapped BAR0: 16384 bytes at \S+, asked UC, got UC, cookie 0x[0-9a-f]+$/);
    await driver.line(/^touched BAR4: wrote (0x[0-9a-f]{16}), read back \1$/);
    await driver.line(/^touched BAR0: register 0x0 reads 0x[0-9a-f]{8}$/);
    await driver.line(/^ready: polling/);
    await admin.revokeMapping({ deviceFileId: dfId, cookie: BigInt(wc[1]!), reason: "examples test" });
    await driver.line(new RegExp(`^revoked: BAR4 cookie ${wc[1]}, reason operator`));
    await driver.line(/^BAR4: its address is inaccessible now; unmapping it$/);
    await driver.line(/^unmapped BAR4: released$/);
    await admin.drainDevice({ deviceId: "sim1", reason: "examples test" });
    try {
      await driver.line(/^health: sim1 draining$/);
      // A drain revokes the device file: its one mapping left goes.
      await driver.line(/^revoked: .*reason device-drain/);
      await driver.line(/^unmapped BAR0: /);
    } finally {
      await admin.undrainDevice({ deviceId: "sim1" });
    }
    driver.child.kill("SIGTERM");
    assert.equal(await driver.exited, 0, driver.output());
    await driver.line(/^stopping \(SIGTERM\)$/);
    const fds = await driver.line(/^fds: (\d+) at start, (\d+) at exit$/);
    assert.equal(fds[2], fds[1], `no fd leaked: ${fds[0]}`);
    await until("the driver's session to end in brokerd", async () =>
      (await admin.listSessions({})).sessions.every((s) => s.sessionId !== session) ? true : undefined,
    );
  });

  it("vfb-driver-start under valgrind: maps both BARs in one exchange, stops on SIGTERM, no error, no leak, no fd left", async () => {
    const driver = started("valgrind", [
      ...["-q", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect"],
      ...["--track-fds=yes", DRIVER, "--socket", b.socket, "sim1"],
    ]);
    await driver.line(/^ready: polling/);
    driver.child.kill("SIGTERM");
    assert.equal(await driver.exited, 0, driver.output());
    await driver.line(/^unmapped 2 mapping\(s\): released$/);
    const open = driver
      .stderr()
      .split(/\n(?===\d+== Open )/)
      .filter((b) => /Open (file descriptor|AF_UNIX socket)/.test(b));
    assert.deepEqual(
      open.filter((b) => !b.includes("<inherited from parent>")),
      [],
      driver.output(),
    );
  });

  it("vfb-driver-start: an operator ending its session is printed, and it exits 1 with no fd leaked", async () => {
    const driver = started(DRIVER, ["--socket", b.socket, "sim0"]);
    const session = (await driver.line(/^connected: session (\S+),/))[1]!;
    await driver.line(/^ready: polling/);
    await admin.revokeSession({ sessionId: session, reason: "examples test" });
    assert.equal(await driver.exited, 1, driver.output());
    await driver.line(/^session ended: revoked: examples test$/);
    const fds = await driver.line(/^fds: (\d+) at start, (\d+) at exit$/);
    assert.equal(fds[2], fds[1], `no fd leaked: ${fds[0]}`);
  });
});

describe("vfb-driver-start across a brokerd restart", () => {
  // SIGTERM: brokerd says "restart" and keeps the grants; SIGKILL: the connection drops
  // ("connection-lost") and brokerd restores the session from its state records.
  for (const [signal, ended] of [
    ["SIGTERM", "restart"],
    ["SIGKILL", "connection-lost"],
  ] as const) {
    it(`brokerd stopped by ${signal}: it hears "${ended}", takes its session back with its mappings, and exits 0 on SIGTERM with no fd leaked`, {
      timeout: 120_000,
    }, async () => {
      let b = await startBrokerd({ policyText: POLICY });
      const driver = started(DRIVER, ["--socket", b.socket, "sim0"]);
      try {
        const session = (await driver.line(/^connected: session (\S+),/))[1]!;
        await driver.line(/^ready: polling/);
        const exited = new Promise((r) => b.proc.once("exit", r));
        b.proc.kill(signal);
        await exited;
        await driver.line(new RegExp(`^session ended: ${ended}`));
        b = await startBrokerd({ dir: b.dir, policyText: POLICY });
        await driver.line(new RegExp(`^resumed: session ${session}; mappings kept at the same addresses$`));
        const admin = createClient(AdminService, `unix:${b.adminSocket}`);
        try {
          const held = (await admin.listMappings({})).mappings.filter((m) => m.sessionId === session);
          assert.equal(held.length, 2, "brokerd holds both of its mappings again");
        } finally {
          admin.close();
        }
        driver.child.kill("SIGTERM");
        assert.equal(await driver.exited, 0, driver.output());
        await driver.line(/^unmapped 2 mapping\(s\): released$/);
        const fds = await driver.line(/^fds: (\d+) at start, (\d+) at exit$/);
        assert.equal(fds[2], fds[1], `no fd leaked: ${fds[0]}`);
      } finally {
        driver.child.kill("SIGKILL");
        await b.stop();
      }
    });
  }
});
