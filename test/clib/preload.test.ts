// libvfio-broker-preload.so end to end: brokerd as its own process serving simulated devices with
// BDF-shaped ids (the sim backend takes any id; they have no sysfs files on this host, so the real
// open fails ENOENT and the shim asks brokerd), and clients/c/tests/preload_probe.c, a program that
// calls libc only, run as uid 65534 with the shim preloaded: under ASan + UBSan (the shim and the
// probe built for clang's shared runtime, preloaded first), and once plain under valgrind. Between
// the probe's steps this test reads the bytes back through a gRPC session of another uid and counts
// the mappings brokerd holds: open and mmap at offsets, close with the mapping alive, partial and
// last munmap, dups, two opens of one file and opens from a second thread, fork (the child maps the
// inherited fd), exec (the fd is closed there), fopen and other spellings of the path, a refused
// open (EACCES and one message). A last run mounts a tmpfs over /sys/bus/pci/devices in a mount
// namespace: a file the probe may open itself is the real file, one it may not is brokerd's. And a
// program built on Debian's libpciaccess (clients/c/tests/preload_pciaccess.c), given the device's
// config and resource files in such a namespace, maps BAR2 with PCI_DEV_MAP_FLAG_WRITE_COMBINE
// through the plain shim; the bytes are read back at its offset, and nothing stays held.
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { AdminService, createClient, Layout } from "@vfio-broker/proto";
import { brokerClient } from "../e2e/agents/raw.js";
import { type BrokerProcess, NOBODY, REPO, startBrokerd } from "../lib/brokerd.js";

const CLIB = join(REPO, "clients/c");
const PROBE = join(CLIB, "build/asan/vfb-preload-probe");
const PROBE_PLAIN = join(CLIB, "build/test/vfb-preload-probe");
const SHIM = join(CLIB, "build/asan/libvfio-broker-preload.so");
const SHIM_PLAIN = join(CLIB, "build/libvfio-broker-preload.so");
const PCIACCESS = join(CLIB, "build/test/vfb-preload-pciaccess");
const PAGE = 4096n;
const DEV = "0000:7e:00.1";
const DENIED = "0000:7e:00.2";

const SIM = JSON.stringify(
  [DEV, DENIED].map((id) => ({
    id,
    regions: [
      { index: 0, size: 64 << 10 },
      { index: 2, size: 1 << 20, prefetchable: true },
    ],
  })),
);

// uid 65534 may open DEV only, 8 MiB at most; root (this test's reader) both.
const POLICY = `version: 1
rules:
  - name: nobody
    match: { uids: [${NOBODY}] }
    devices: ["${DEV}"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
    limits: { bytes: 8MiB }
  - name: root
    match: { uids: [0] }
    devices: ["${DEV}", "${DENIED}"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
`;

function asanRuntime(): string {
  const r = spawnSync("clang-14", ["-print-file-name=libclang_rt.asan-x86_64.so"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

/** The probe as uid 65534 with the shim preloaded: its lines, and a line to send when it awaits. */
function probe(args: string[], b: BrokerProcess, plain = false, wrap: string[] = []) {
  const env = plain
    ? { ...process.env, LD_PRELOAD: SHIM_PLAIN, VFIO_BROKER_SOCKET: b.socket }
    : {
        ...process.env,
        LD_PRELOAD: `${asanRuntime()}:${SHIM}`,
        VFIO_BROKER_SOCKET: b.socket,
        ASAN_OPTIONS: "detect_leaks=1:abort_on_error=1",
        UBSAN_OPTIONS: "print_stacktrace=1",
      };
  const cmd = plain
    ? [
        "valgrind",
        "-q",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite,indirect",
        PROBE_PLAIN,
      ]
    : [PROBE];
  const all = [...wrap, ...cmd, ...args];
  const child: ChildProcessWithoutNullStreams = spawn(all[0]!, all.slice(1), {
    env,
    ...(wrap.length === 0 ? { uid: NOBODY, gid: NOBODY } : {}),
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
  return {
    async next(): Promise<string> {
      const l = await lines.next();
      if (l.done) throw new Error(`the probe ended early:\n${out}\n${err}`);
      out += `${l.value}\n`;
      assert.ok(!l.value.startsWith("FAIL"), `${out}\n${err}`);
      return l.value;
    },
    send(line: string) {
      child.stdin.write(`${line}\n`);
    },
    async done(): Promise<void> {
      const code = await exited;
      assert.match(out, /^[1-9]\d* passed, 0 failed$/m, `${out}\n${err}`);
      assert.equal(code, 0, `${out}\n${err}`);
    },
    stderr: () => err,
    kill: () => child.kill("SIGKILL"),
  };
}

describe("libvfio-broker-preload.so against a real brokerd", () => {
  let b: BrokerProcess;
  before(async () => {
    const built = spawnSync(
      "make",
      [
        "-s",
        "-C",
        CLIB,
        "build/asan/vfb-preload-probe",
        "build/test/vfb-preload-probe",
        "build/asan/libvfio-broker-preload.so",
        "build/test/vfb-preload-pciaccess",
        "all",
      ],
      { encoding: "utf8" },
    );
    assert.equal(built.status, 0, `${built.stdout}${built.stderr}`);
    b = await startBrokerd({ policyText: POLICY, args: ["--sim-devices", SIM] });
  });
  after(() => b?.stop());

  /** Bytes of DEV's BAR2 at `offset`, read by a gRPC session of this (root) process. */
  async function readBar2(offset: bigint, length: number): Promise<string> {
    const rpc = brokerClient(b.socket);
    try {
      await rpc.hello({ clientName: "reader" });
      const df = await rpc.openDevice({ deviceId: DEV, layout: Layout.COMPACT });
      const base = df.regions.find((r) => r.region?.index === 2)!.cookie;
      const read = await rpc.readRegion({ deviceFileId: df.deviceFileId, offset: base + offset, length });
      return Buffer.from(read.data).toString("hex");
    } finally {
      rpc.close();
    }
  }

  /** The grants brokerd holds: its mappings' references (two grants of one range share a mapping). */
  async function held(): Promise<number> {
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      return (await admin.listMappings({})).mappings.reduce((n, m) => n + (m.mapping?.refs ?? 0), 0);
    } finally {
      admin.close();
    }
  }

  /** What the test checks at each of the flow's awaits. */
  const checks: Record<string, () => Promise<void>> = {
    mapped: async () => {
      assert.equal(
        await readBar2(3n * PAGE + 0x100n, 8),
        "cafef00d0badc0de",
        "bytes written at BAR offset 3 pages",
      );
      assert.equal(await readBar2(0n, 1), "5a", "a second mapping at offset 0 of the same fd");
      assert.equal(await held(), 1, "one open: one grant of the whole BAR");
    },
    closed: async () => {
      assert.equal(await held(), 1, "close with a mapping alive keeps the grant");
      assert.equal(
        await readBar2(3n * PAGE + 0x108n, 1),
        "11",
        "the mapping still reaches the BAR after close",
      );
    },
    partial: async () => {
      assert.equal(await held(), 1, "a partial munmap keeps the grant");
      assert.equal(await readBar2(4n * PAGE, 1), "22");
    },
    released: async () => assert.equal(await held(), 0, "the last munmap after close released the grant"),
    "dup-mapped": async () => {
      assert.equal(await held(), 1, "a mapping of the last dup keeps the grant after every fd closed");
      assert.equal(await readBar2(7n * PAGE, 1), "42");
    },
    two: async () => assert.equal(await held(), 2, "two opens of one file: two grants"),
    forked: async () => {
      assert.equal(await held(), 1, "the child's close, munmap and exit left the parent's grant held");
      assert.equal(await readBar2(5n * PAGE, 1), "77", "the child mapped the inherited fd at its offset");
    },
    end: async () => {
      assert.equal(await held(), 0, "nothing held after the last close and munmap");
      assert.equal(await readBar2(9n * PAGE, 1), "99", "fopen through /sys/devices/pci.../BDF/resource2");
    },
  };

  async function flow(plain: boolean) {
    const t = probe(["flow", DEV, DENIED], b, plain);
    try {
      await flowSteps(t);
    } finally {
      t.kill(); /* a failed step leaves the probe waiting, holding grants */
    }
  }

  async function flowSteps(t: ReturnType<typeof probe>) {
    const seen: string[] = [];
    for (;;) {
      const l = await t.next();
      if (l.startsWith("await ")) {
        const what = l.slice(6);
        seen.push(what);
        await checks[what]!();
        t.send("go");
      }
      if (l.startsWith("mapped ")) assert.match(l, /cloexec=1 size=1048576/);
      if (l.startsWith("fds ")) {
        const [, before, afterN] = l.match(/before=(\d+) after=(\d+)/)!;
        assert.equal(afterN, before, "no fd left (the session's included)");
      }
      if (/^\d+ passed, \d+ failed$/.test(l)) break;
    }
    await t.done();
    assert.deepEqual(seen, Object.keys(checks));
    const messages = t.stderr().match(/^libvfio-broker-preload: .*$/gm) ?? [];
    assert.equal(messages.length, 1, `one message per process (forks print their own): ${t.stderr()}`);
    assert.match(messages[0]!, new RegExp(`refused ${DENIED} BAR2 WC: PERMISSION_DENIED: .*errno EACCES`));
  }

  it(
    "open, mmap at offsets, close, dup, threads, fork, exec, fopen, a refusal: under ASan + UBSan",
    {
      timeout: 120_000,
    },
    () => flow(false),
  );

  it("the same flow once under valgrind (memcheck): no error, no leak", { timeout: 240_000 }, () =>
    flow(true),
  );

  it("a BAR file the process may open is the real file; one it may not is brokerd's", {
    timeout: 60_000,
  }, async () => {
    const dir = `/sys/bus/pci/devices/${DEV}`;
    const setup = [
      "mount -t tmpfs tmpfs /sys/bus/pci/devices",
      `mkdir ${dir}`,
      `truncate -s 8192 ${dir}/resource2 ${dir}/resource0`,
      `chown ${NOBODY} ${dir}/resource2`,
      `chmod 600 ${dir}/resource0`,
      `exec setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups "$@"`,
    ].join(" && ");
    const t = probe(["self", DEV], b, false, ["unshare", "--mount", "sh", "-c", setup, "sh"]);
    const lines: string[] = [];
    for (;;) {
      const l = await t.next();
      lines.push(l);
      if (/^\d+ passed, \d+ failed$/.test(l)) break;
    }
    await t.done();
    assert.ok(lines.includes(`self real=${dir}/resource2`), lines.join("\n"));
    const brokered = lines.find((l) => l.startsWith("self brokered="))!;
    assert.match(
      brokered,
      new RegExp(`^self brokered=${b.stateDir}/sim/`),
      "resource0 (EACCES) came from brokerd",
    );
    assert.equal(t.stderr(), "", "nothing printed");
  });
  it("Debian's libpciaccess maps BAR2 write-combining through the shim (pci_device_map_range)", {
    timeout: 60_000,
  }, async () => {
    // The device's sysfs directory as libpciaccess reads it (config: vendor 1af4 device 1110,
    // class 0500; resource: BAR0 64 KiB, BAR2 1 MiB prefetchable 64-bit), with no resourceN
    // files: resource2_wc is ENOENT, so the shim asks brokerd.
    const src = mkdtempSync(join(tmpdir(), "vfb-pciaccess-"));
    try {
      const config = Buffer.alloc(256);
      config.writeUInt16LE(0x1af4, 0);
      config.writeUInt16LE(0x1110, 2);
      config[0x0b] = 0x05;
      config.writeUInt32LE(0xfe00000c, 0x18);
      writeFileSync(join(src, "config"), config, { mode: 0o644 });
      const line = (a: bigint, b: bigint, f: bigint) =>
        [a, b, f].map((v) => `0x${v.toString(16).padStart(16, "0")}`).join(" ");
      const zero = line(0n, 0n, 0n);
      const resource = [
        line(0xfe100000n, 0xfe10ffffn, 0x40200n),
        zero,
        line(0xfe000000n, 0xfe0fffffn, 0x14220cn),
        zero,
        zero,
        zero,
        zero,
      ];
      writeFileSync(join(src, "resource"), `${resource.join("\n")}\n`, { mode: 0o644 });
      const dir = `/sys/bus/pci/devices/${DEV}`;
      const setup = [
        "mount -t tmpfs tmpfs /sys/bus/pci/devices",
        `mkdir ${dir}`,
        `cp ${src}/config ${src}/resource ${dir}/`,
        `exec setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups "$@"`,
      ].join(" && ");
      const r = spawnSync(
        "unshare",
        ["--mount", "sh", "-c", setup, "sh", PCIACCESS, DEV, "0x2000", "libpciaccess-wc"],
        {
          encoding: "utf8",
          // The plain shim, as installed: the namespace's setup commands run with it preloaded too.
          env: { ...process.env, LD_PRELOAD: SHIM_PLAIN, VFIO_BROKER_SOCKET: b.socket },
        },
      );
      assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /^pciaccess bar2 base=0xfe000000 size=0x100000 mapped=1 unmapped=1$/m);
      assert.equal(r.stderr, "", "nothing printed");
      assert.equal(
        Buffer.from(await readBar2(0x2000n, 15), "hex").toString(),
        "libpciaccess-wc",
        "the bytes landed at BAR2 offset 0x2000 (libpciaccess's mmap offset, through the shim)",
      );
      assert.equal(
        await held(),
        0,
        "pci_device_unmap_range after libpciaccess closed the fd released the grant",
      );
    } finally {
      rmSync(src, { recursive: true, force: true });
    }
  });
});
