// VM suite, guest side: runs as root (PID 1's child) inside the QEMU guest that run.sh boots, on the
// real ivshmem-plain device (BAR2 = a host shared-memory file). It starts brokerd once per backend
// (sysfs, then vfio with --vfio-bind), drives it with agent.js as uid 65534, and checks what only
// the guest kernel can tell: backing kinds and effective attributes, the x86 PAT memory type of every
// live mapping (debugfs), the backing-family rule, and that a client killed mid-way leaves nothing
// behind (brokerd's fd count returns to its baseline, the mapping is gone from AdminService, the PAT
// entry is gone). The host (run.sh) then checks that the bytes landed in the shared-memory file.
// Prints "VMTEST-CHECK PASS|FAIL name" lines and "VMTEST-GUEST-SUMMARY passed=N failed=N".
// Not a node:test file (the unit runner skips dist/**/vm/).
import { type ChildProcess, spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  fstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PAT_MEMTYPE_LIST, parsePatMemtypeList } from "@vfio-broker/brokerd/devices/pat";
import { verifyPciAttribute } from "@vfio-broker/brokerd/devices/pci-attribute";
import { PciFunction } from "@vfio-broker/brokerd/devices/pci-function";
import { VfioBackend } from "@vfio-broker/brokerd/devices/vfio";
import { closeFd, mmap } from "@vfio-broker/native";
import { AdminService, Attribute, createClient } from "@vfio-broker/proto";
import type { Step } from "./agent.js";
import { modePhase } from "./mode-phase.js";
import { dpdkPhase } from "./phase-dpdk.js";
import { libpciaccessPhase } from "./phase-libpciaccess.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, "..", "..", "..");
const BROKERD = join(REPO, "services/brokerd/dist/main.js");
const AGENT = join(HERE, "agent.js");
const NODE = process.execPath;
const T0 = Date.now();
const log = (m: string) => console.log(`VMTEST[${((Date.now() - T0) / 1000).toFixed(1)}s] ${m}`);
/** Linux 7.x or newer: VFIO DMABUF export, and vfio-pci claims every BAR at device open. */
const K7 = Number(readFileSync("/proc/sys/kernel/osrelease", "utf8").split(".")[0]) >= 7;

let passed = 0;
let failed = 0;
function check(name: string, ok: boolean, detail = ""): boolean {
  if (ok) passed++;
  else failed++;
  console.log(`VMTEST-CHECK ${ok ? "PASS" : "FAIL"} ${name}${!ok && detail ? ` -- ${detail}` : ""}`);
  return ok;
}

function findPci(vendor: string, device: string): string | undefined {
  for (const bdf of readdirSync("/sys/bus/pci/devices").sort()) {
    const d = join("/sys/bus/pci/devices", bdf);
    const v = readFileSync(join(d, "vendor"), "utf8").trim();
    if (v === vendor && readFileSync(join(d, "device"), "utf8").trim() === device) return bdf;
  }
  return undefined;
}

async function until<T>(
  what: string,
  fn: () => T | undefined | false,
  timeoutMs: number,
): Promise<T | undefined> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) {
      log(`timed out waiting for ${what}`);
      return undefined;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- brokerd ---------------------------------------------------------------------------------------

export interface Brokerd {
  proc: ChildProcess;
  dir: string;
  stderr: () => string;
  fds: () => number;
  stop(): Promise<void>;
}

async function startBrokerd(tag: string, args: string[], policy: string): Promise<Brokerd | undefined> {
  const dir = `/run/vb-${tag}`;
  const t = Date.now();
  const proc = spawn(
    NODE,
    [
      BROKERD,
      "--runtime-dir",
      dir,
      "--policy",
      policy,
      "--metrics",
      "off",
      "--no-sim",
      "--journal",
      // brokerd's private dir (--runtime-dir DIR: DIR.private, made before the journal is opened);
      // /tmp is writable by others, so brokerd refuses a journal there.
      `${dir}.private/journal-${tag}.jsonl`,
      ...args,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let err = "";
  let outText = "";
  proc.stderr!.on("data", (b: Buffer) => {
    err += b.toString();
  });
  proc.stdout!.on("data", (b: Buffer) => {
    outText += b.toString();
  });
  const ready = await until(
    "brokerd ready",
    () => outText.includes('"event":"ready"') || proc.exitCode !== null,
    90_000,
  );
  if (!ready || proc.exitCode !== null) {
    log(`brokerd (${tag}) did not start: exit ${proc.exitCode}\n${err}`);
    proc.kill("SIGKILL");
    return undefined;
  }
  log(`brokerd (${tag}) ready in ${Date.now() - t} ms: ${outText.trim()}`);
  for (const l of err.split("\n").filter((x) => x.includes("sysfs:") || x.includes("vfio:")))
    log(`  brokerd: ${l}`);
  return {
    proc,
    dir,
    stderr: () => err,
    fds: () => readdirSync(`/proc/${proc.pid}/fd`).length,
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      const k = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(k);
    },
  };
}

// ---- agents (uid 65534) -------------------------------------------------------------------------

type AgentLine = Record<string, unknown> & { op: string };

class Agent {
  readonly proc: ChildProcess;
  private readonly lines: AgentLine[] = [];
  private waiters: ((l: AgentLine | undefined) => void)[] = [];
  private err = "";

  constructor(socket: string, deviceId: string, plan: Step[]) {
    this.proc = spawn(
      "setpriv",
      [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        NODE,
        AGENT,
        socket,
        deviceId,
        JSON.stringify(plan),
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    let buf = "";
    this.proc.stdout!.on("data", (b: Buffer) => {
      buf += b.toString();
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.startsWith("AGENT ")) continue;
        const v = JSON.parse(line.slice(6)) as AgentLine;
        log(`  agent ${this.proc.pid}: ${line.slice(6)}`);
        const w = this.waiters.shift();
        if (w) w(v);
        else this.lines.push(v);
      }
    });
    this.proc.stderr!.on("data", (b: Buffer) => {
      this.err += b.toString();
    });
    this.proc.on("exit", () => {
      for (const w of this.waiters.splice(0)) w(undefined);
    });
  }

  /** The next step's report (undefined if the agent exited or 60 s passed). */
  next(): Promise<AgentLine | undefined> {
    const l = this.lines.shift();
    if (l) return Promise.resolve(l);
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(undefined), 60_000);
      this.waiters.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
    });
  }

  async expect(op: string): Promise<AgentLine> {
    const l = await this.next();
    if (!l || l.op !== op) {
      const why = `agent: expected "${op}", got ${JSON.stringify(l)}; stderr: ${this.err.slice(-1500)}`;
      throw new Error(why);
    }
    return l;
  }

  resume(): void {
    this.proc.stdin!.write("next\n");
  }

  exited(): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null)
      return Promise.resolve(this.proc.exitCode);
    return new Promise((r) => this.proc.once("exit", (code) => r(code)));
  }
}

// ---- checks --------------------------------------------------------------------------------------

/** PAT entries (type per entry) the kernel holds over [BAR + offset, + length). */
function patEntries(fn: PciFunction, bar: number, offset: number, length: number): string[] {
  const start = fn.bar(bar)!.start + BigInt(offset);
  const end = start + BigInt(length);
  return parsePatMemtypeList(readFileSync(PAT_MEMTYPE_LIST, "utf8"))
    .filter((e) => e.start < end && e.end > start)
    .map((e) => e.type);
}

function patCheck(
  fn: PciFunction,
  name: string,
  offset: number,
  length: number,
  want: string[],
  bar = 2,
): void {
  const v = verifyPciAttribute(fn, bar, BigInt(offset), BigInt(length));
  const got = v.patTypes.join(",") || "none";
  check(
    `${name}: PAT memtype of ${fn.bdf} BAR${bar}+0x${offset.toString(16)} (phys 0x${v.physStart.toString(16)}) is ${want.join(",") || "none"}`,
    v.unavailable === "" && got === (want.join(",") || "none"),
    v.unavailable || `PAT list shows ${got}`,
  );
}

/** The same check through brokerd's own admin call, addressed by the client's device file + cookie. */
async function adminVerify(b: Brokerd, l: AgentLine, name: string, want: "WC" | "UC"): Promise<void> {
  const admin = createClient(AdminService, `unix:${b.dir}.private/admin.sock`);
  try {
    const v = await admin.verifyMappingAttribute({
      deviceFileId: BigInt(String(l.deviceFileId)),
      cookie: BigInt(String(l.cookie)),
    });
    check(
      `${name}: AdminService.VerifyMappingAttribute says consistent ${want} (PAT ${v.patTypes.join(",") || "none"})`,
      v.consistent && Attribute[v.effectiveAttribute] === want,
      v.unavailable || JSON.stringify({ pat: v.patTypes, observed: v.observed.map((a) => Attribute[a]) }),
    );
  } catch (e) {
    check(`${name}: AdminService.VerifyMappingAttribute`, false, (e as Error).message);
  } finally {
    admin.close();
  }
}

function mapOk(l: AgentLine, name: string, backing: string, effective: string): boolean {
  return check(
    `${name}: mapped with backing ${backing}, effective ${effective}`,
    l.ok === true && l.backing === backing && l.effective === effective,
    JSON.stringify(l),
  );
}

async function mappingsGone(b: Brokerd, label: string): Promise<void> {
  const admin = createClient(AdminService, `unix:${b.dir}.private/admin.sock`);
  try {
    const r = await admin.listMappings({});
    check(
      `${label}: AdminService lists no mappings`,
      r.mappings.length === 0,
      `${r.mappings.length} mapping(s) left`,
    );
  } catch (e) {
    check(`${label}: AdminService lists no mappings`, false, (e as Error).message);
  } finally {
    (admin as unknown as { close(): void }).close();
  }
}

async function killMidway(
  b: Brokerd,
  fn: PciFunction,
  label: string,
  plan: Step[],
  offset: number,
  pat: string[],
  /** PAT entries the client's own mapping adds: 1, except a VFIO device-fd mmap on 7.x (0, see below). */
  ownEntries = 1,
): Promise<void> {
  const baseline = b.fds();
  const patBefore = patEntries(fn, 2, offset, 0x1000);
  const a = new Agent(join(b.dir, "broker.sock"), fn.bdf, plan);
  await a.expect("hello");
  const m = await a.expect("map");
  mapOk(m, label, String(plan.find((s) => s.op === "map") ? m.backing : ""), String(m.effective));
  await a.expect("pause");
  patCheck(fn, `${label} (live)`, offset, 0x1000, pat);
  await adminVerify(b, m, `${label} (live)`, "UC");
  const patLive = patEntries(fn, 2, offset, 0x1000);
  check(
    `${label}: the client's mapping adds ${ownEntries === 1 ? "its own PAT entry" : "no PAT entry (7.x: vfio-pci's UC- barmap from device open covers it)"} (${patBefore.length} -> ${patLive.length})`,
    patLive.length === patBefore.length + ownEntries,
  );
  const during = b.fds();
  a.proc.kill("SIGKILL");
  await a.exited();
  const back = await until("brokerd fd count back to baseline", () => b.fds() <= baseline, 20_000);
  check(
    `${label}: after SIGKILL brokerd's fd count returns to its baseline ${baseline} (was ${during} while mapped)`,
    back === true,
    `now ${b.fds()}`,
  );
  await mappingsGone(b, label);
  // vfio-pci's own ioremap of a BAR it has mapped (its "barmap", UC-) stays until the device closes:
  // compare with the entries before the client mapped, not with "none".
  const patAfter = patEntries(fn, 2, offset, 0x1000);
  check(
    `${label}: after SIGKILL the PAT entries over the range are back to [${patBefore.join(",")}]`,
    patAfter.join(",") === patBefore.join(","),
    `now [${patAfter.join(",")}]`,
  );
}

// ---- phases --------------------------------------------------------------------------------------

async function sysfsPhase(fn: PciFunction, edu: PciFunction | undefined, policy: string): Promise<void> {
  log("== phase 1: sysfs backend");
  const b = await startBrokerd("sysfs", ["--sysfs", [fn.bdf, ...(edu ? [edu.bdf] : [])].join(",")], policy);
  if (!check("sysfs: brokerd starts with --sysfs on the ivshmem device", !!b) || !b) return;
  try {
    const sock = join(b.dir, "broker.sock");
    const a = new Agent(sock, fn.bdf, [
      {
        op: "map",
        name: "wc",
        region: 2,
        offset: 0,
        length: 0x10000,
        attr: "WC",
        write: { at: 0x100, text: "SYSFS-WC-uid65534" },
        read: { at: 0x8000, length: 64 },
      },
      { op: "pause", tag: "wc-live" },
      ...(edu
        ? ([
            {
              op: "map",
              name: "eduwc",
              device: edu.bdf,
              region: 0,
              offset: 0,
              length: 0x1000,
              attr: "WC",
              expectError: true,
            },
            {
              op: "map",
              name: "edufb",
              device: edu.bdf,
              region: 0,
              offset: 0,
              length: 0x1000,
              attr: "WC",
              fallback: true,
              regs: { write32: [[0x04, 0x12345678]], read32: [0x00, 0x04] },
            },
            { op: "pause", tag: "edu-live" },
            { op: "release", name: "edufb" },
          ] as Step[])
        : []),
      { op: "readRegion", region: 7, offset: 0, length: 4 },
      { op: "readRegion", region: 2, offset: 0x8000, length: 27 },
      { op: "writeRegion", region: 2, offset: 0x70000, text: "WRITEREGION-SYSFS" },
      { op: "release", name: "wc" },
    ]);
    check("sysfs: agent runs as uid 65534", (await a.expect("hello")).uid === 65534);
    const wc = await a.expect("map");
    mapOk(wc, "sysfs BAR2 WC", "SYSFS_WC", "WC");
    check(
      "sysfs BAR2 WC: client reads the host's pre-boot pattern through its mapping",
      wc.read === "HOST-wrote-this-before-boot",
      String(wc.read),
    );
    await a.expect("pause");
    patCheck(fn, "sysfs BAR2 WC", 0, 0x10000, ["write-combining"]);
    await adminVerify(b, wc, "sysfs BAR2 WC", "WC");
    a.resume();
    if (edu) {
      const refused = await a.expect("map");
      check(
        "sysfs edu BAR0 (not prefetchable, no resource0_wc) WC without fallback is refused",
        refused.ok === false && refused.code === "INVALID_ARGUMENT",
        JSON.stringify(refused),
      );
      const fb = await a.expect("map");
      check(
        "sysfs edu BAR0 WC with fallback: UC through resource0, with the reason",
        fb.ok === true &&
          fb.backing === "SYSFS" &&
          fb.effective === "UC" &&
          /no resource0_wc/.test(String(fb.fallbackReason)),
        JSON.stringify(fb),
      );
      const regs = (fb.regs as string[] | undefined) ?? [];
      check(
        "sysfs edu BAR0 UC: registers through the mapping (id 0x010000ed, liveness reads back ~0x12345678)",
        regs[0] === "0x010000ed" && regs[1] === "0xedcba987",
        JSON.stringify(regs),
      );
      await a.expect("pause");
      patCheck(edu, "sysfs edu BAR0 UC", 0, 0x1000, ["uncached-minus"], 0);
      a.resume();
      await a.expect("release");
    } else check("edu device present (QEMU -device edu)", false);
    const cfg = await a.expect("readRegion");
    check(
      "sysfs ReadRegion(CONFIG) shows vendor 1af4 device 1110",
      cfg.hex === "f41a1011",
      JSON.stringify(cfg),
    );
    const rr = await a.expect("readRegion");
    check(
      "sysfs ReadRegion(BAR2) reads the host pattern (brokerd-side mmap)",
      rr.text === "HOST-wrote-this-before-boot",
      JSON.stringify(rr),
    );
    const wr = await a.expect("writeRegion");
    check("sysfs WriteRegion(BAR2) accepted", wr.ok === true, JSON.stringify(wr));
    await a.expect("release");
    await a.expect("done");
    check("sysfs: agent exits 0", (await a.exited()) === 0);
    patCheck(fn, "sysfs BAR2 WC (released)", 0, 0x10000, []);

    await killMidway(
      b,
      fn,
      "sysfs killed client",
      [
        {
          op: "map",
          name: "uc",
          region: 2,
          offset: 0x10000,
          length: 0x1000,
          attr: "UC",
          write: { at: 0x100, text: "SYSFS-UC-killed-uid65534" },
        },
        { op: "pause", tag: "uc-live" },
      ],
      0x10000,
      ["uncached-minus"],
    );
  } catch (e) {
    check("sysfs phase ran to completion", false, (e as Error).message);
  } finally {
    await b.stop();
    check(
      "sysfs: brokerd exits on SIGTERM",
      b.proc.exitCode === 0,
      `exit ${b.proc.exitCode} ${b.proc.signalCode ?? ""}`,
    );
  }
}

async function vfioPhase(fn: PciFunction, policy: string): Promise<void> {
  log("== phase 2: vfio backend");
  const b = await startBrokerd("vfio", ["--vfio", fn.bdf, "--vfio-bind"], policy);
  if (!check("vfio: brokerd starts with --vfio --vfio-bind (binds vfio-pci via driver_override)", !!b) || !b)
    return;
  try {
    check("vfio: the device is now bound to vfio-pci", fn.driver() === "vfio-pci", fn.driver());
    const err = b.stderr();
    if (!K7)
      check(
        "vfio: brokerd reports absent kernel features (iommufd cdev, DMABUF) in its log",
        /feature absent: no iommufd cdev/.test(err) && /feature absent: no VFIO DMABUF export/.test(err),
        err.slice(-2000),
      );
    else {
      check(
        "vfio 7.x: brokerd's probe finds DMABUF export (no 'no VFIO DMABUF export' note), no iommufd cdev",
        !/no VFIO DMABUF export/.test(err) && /feature absent: no iommufd cdev/.test(err),
        err.slice(-2000),
      );
      check(
        "vfio 7.x: brokerd's probe finds that a dma-buf cannot be CPU-mmapped, and says so",
        /feature absent: DMABUF slices cannot be mmapped by the CPU on this kernel \(mmap: E/.test(err),
        err.slice(-2000),
      );
      check(
        "vfio 7.x: brokerd finds that vfio-pci claims the BARs at device open (no sysfs backings, no WC)",
        /feature absent: no sysfs backings while brokerd holds the device/.test(err),
        err.slice(-2000),
      );
    }
    const sock = join(b.dir, "broker.sock");
    const a = new Agent(sock, fn.bdf, [
      {
        op: "map",
        name: "swc",
        region: 2,
        offset: 0x20000,
        length: 0x1000,
        attr: "WC",
        ...(K7 ? { expectError: true } : { write: { at: 0x100, text: "VFIOBE-SYSFS-WC-uid65534" } }),
      },
      {
        op: "map",
        name: "suc",
        region: 2,
        offset: 0x30000,
        length: 0x1000,
        attr: "UC",
        write: { at: 0x100, text: K7 ? "VFIOBE-7X-DEVFD-UC-uid65534" : "VFIOBE-SYSFS-UC-uid65534" },
      },
      { op: "pause", tag: "sysfs-family-live" },
      ...(K7 ? [] : [{ op: "release" as const, name: "swc" }]),
      { op: "release", name: "suc" },
      {
        op: "map",
        name: "dev",
        region: 2,
        offset: 0,
        length: 0x10000,
        attr: "UC",
        write: { at: 0x4100, text: "VFIO-DEVFD-UC-uid65534" },
        read: { at: 0x8000, length: 64 },
      },
      { op: "pause", tag: "vfio-family-live" },
      {
        op: "map",
        name: "wcrefused",
        region: 2,
        offset: 0x50000,
        length: 0x1000,
        attr: "WC",
        expectError: true,
      },
      { op: "map", name: "wcfb", region: 2, offset: 0x50000, length: 0x1000, attr: "WC", fallback: true },
      { op: "release", name: "wcfb" },
      { op: "readRegion", region: 7, offset: 0, length: 4 },
      { op: "readRegion", region: 2, offset: 0x8000, length: 27 },
      { op: "writeRegion", region: 2, offset: 0x70100, text: "WRITEREGION-VFIO" },
      { op: "release", name: "dev" },
    ]);
    const hello = await a.expect("hello");
    const backings = (hello.backings ?? []) as string[];
    const attrs = (hello.attributes ?? []) as string[];
    check(
      "vfio: Hello offers no dma-buf backing for CPU mapping (no probe showed a dma-buf mmap working)",
      !backings.includes("DMABUF") && backings.includes("VFIO_DEVICE_FD"),
      JSON.stringify(hello),
    );
    if (K7)
      check(
        "vfio 7.x: Hello offers neither sysfs backings nor WC (vfio-pci holds the BARs while open)",
        !backings.includes("SYSFS") && !backings.includes("SYSFS_WC") && !attrs.includes("WC"),
        JSON.stringify(hello),
      );
    else
      check(
        "vfio 6.1: Hello offers sysfs backings and WC",
        backings.includes("SYSFS") && backings.includes("SYSFS_WC") && attrs.includes("WC"),
        JSON.stringify(hello),
      );
    if (!K7) {
      mapOk(await a.expect("map"), "vfio backend BAR2 WC", "SYSFS_WC", "WC");
      const suc = await a.expect("map");
      mapOk(suc, "vfio backend BAR2 UC while sysfs holds BAR2 (family kept)", "SYSFS", "UC");
      await a.expect("pause");
      patCheck(fn, "vfio backend BAR2 WC via resource2_wc", 0x20000, 0x1000, ["write-combining"]);
      patCheck(fn, "vfio backend BAR2 UC via resource2", 0x30000, 0x1000, ["uncached-minus"]);
      a.resume();
      await a.expect("release");
      await a.expect("release");
    } else {
      const swc = await a.expect("map");
      check(
        "vfio 7.x: WC without fallback is refused with INVALID_ARGUMENT (BAR2 offers only UC through this backend)",
        swc.ok === false &&
          swc.code === "INVALID_ARGUMENT" &&
          /cannot be mapped WC: it allows UC/.test(String(swc.message)),
        JSON.stringify(swc),
      );
      const suc = await a.expect("map");
      mapOk(
        suc,
        "vfio 7.x backend BAR2 UC goes through the device fd (sysfs refused by the kernel)",
        "VFIO_DEVICE_FD",
        "UC",
      );
      await a.expect("pause");
      patCheck(fn, "vfio 7.x backend BAR2 UC via the device fd", 0x30000, 0x1000, ["uncached-minus"]);
      a.resume();
      await a.expect("release");
    }
    const dev = await a.expect("map");
    mapOk(dev, "vfio BAR2 UC (policy allowDeviceFd)", "VFIO_DEVICE_FD", "UC");
    check(
      "vfio BAR2 UC: mmap offset is the region offset 2<<40",
      dev.mmapOffset === String(2n << 40n),
      String(dev.mmapOffset),
    );
    check(
      "vfio BAR2 UC: client reads the host's pre-boot pattern",
      dev.read === "HOST-wrote-this-before-boot",
      String(dev.read),
    );
    await a.expect("pause");
    patCheck(fn, "vfio BAR2 UC via the device fd", 0, 0x10000, ["uncached-minus"]);
    a.resume();
    const refused = await a.expect("map");
    if (!K7)
      check(
        "vfio: WC on a BAR held by VFIO is refused with FAILED_PRECONDITION",
        refused.ok === false &&
          refused.code === "FAILED_PRECONDITION" &&
          /mapped through VFIO/.test(String(refused.message)),
        JSON.stringify(refused),
      );
    else
      check(
        "vfio 7.x: WC on a BAR held by VFIO is refused (INVALID_ARGUMENT: the region offers only UC here)",
        refused.ok === false && refused.code === "INVALID_ARGUMENT",
        JSON.stringify(refused),
      );
    const fb = await a.expect("map");
    check(
      "vfio: WC with fallback on a BAR held by VFIO gives UC through VFIO, with the reason",
      fb.ok === true &&
        fb.backing === "VFIO_DEVICE_FD" &&
        fb.effective === "UC" &&
        /VFIO/.test(String(fb.fallbackReason)),
      JSON.stringify(fb),
    );
    await a.expect("release");
    const cfg = await a.expect("readRegion");
    check(
      "vfio ReadRegion(CONFIG) through the device fd shows 1af4:1110",
      cfg.hex === "f41a1011",
      JSON.stringify(cfg),
    );
    const rr = await a.expect("readRegion");
    check(
      "vfio ReadRegion(BAR2) through the device fd reads the host pattern",
      rr.text === "HOST-wrote-this-before-boot",
      JSON.stringify(rr),
    );
    check("vfio WriteRegion(BAR2) accepted", (await a.expect("writeRegion")).ok === true);
    await a.expect("release");
    await a.expect("done");
    check("vfio: agent exits 0", (await a.exited()) === 0);
    const journal = readFileSync("/run/vb-vfio.private/journal-vfio.jsonl", "utf8");
    check(
      "vfio: the audit journal flags the device-fd mapping (deviceFd: true)",
      /"event":"mapping.(create|grant)"[^\n]*"backing":"vfio-device-fd"[^\n]*"deviceFd":true/.test(journal),
    );

    await killMidway(
      b,
      fn,
      "vfio killed client",
      [
        {
          op: "map",
          name: "dev",
          region: 2,
          offset: 0x60000,
          length: 0x1000,
          attr: "UC",
          write: { at: 0x100, text: "VFIO-DEVFD-killed-uid65534" },
        },
        { op: "pause", tag: "dev-live" },
      ],
      0x60000,
      ["uncached-minus"],
      K7 ? 0 : 1,
    );
  } catch (e) {
    check("vfio phase ran to completion", false, (e as Error).message);
  } finally {
    await b.stop();
    check(
      "vfio: brokerd exits on SIGTERM",
      b.proc.exitCode === 0,
      `exit ${b.proc.exitCode} ${b.proc.signalCode ?? ""}`,
    );
  }
}

// ---- phase 3 (7.x): VFIO DMABUF export through brokerd's vfio backend -----------------------------

async function dmabufPhase(fn: PciFunction): Promise<void> {
  log("== phase 3: VFIO DMABUF export (brokerd's vfio backend, in this process)");
  const logs: string[] = [];
  const be = new VfioBackend({ devices: [fn.bdf], bind: true, log: (m) => logs.push(m) });
  try {
    const f = be.features()[fn.bdf]!;
    if (!K7) {
      check("dmabuf 6.1: the probe finds no DMABUF export", f.dmabuf === false, JSON.stringify(f));
      let code = "";
      try {
        be.exportDmabuf(fn.bdf, 2, 0n, 0x1000n);
      } catch (e) {
        code = (e as { code?: string }).code ?? String(e);
      }
      check(
        "dmabuf 6.1: exportDmabuf is refused with FAILED_PRECONDITION",
        code === "FAILED_PRECONDITION",
        code,
      );
      return;
    }
    check("dmabuf 7.x: the probe finds DMABUF export", f.dmabuf === true, JSON.stringify(f));
    check("dmabuf 7.x: the probe finds no CPU mmap of a dma-buf", f.dmabufMmap === false, JSON.stringify(f));
    check(
      "dmabuf 7.x: the backend offers no dmabuf backing kind",
      !be.offeredBackingKinds().includes("dmabuf"),
      JSON.stringify(be.offeredBackingKinds()),
    );
    const off = 0x10000n;
    const len = 0x4000n;
    const fd = be.exportDmabuf(fn.bdf, 2, off, len);
    const link = readlinkSync(`/proc/self/fd/${fd}`);
    const info = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
    log(`dma-buf fd ${fd}: ${link}; fdinfo ${info.replace(/\n/g, " | ")}`);
    check(
      "dmabuf 7.x: the exported fd is a dma-buf (/proc/self/fd link /dmabuf:)",
      /^\/dmabuf:/.test(link),
      link,
    );
    check(
      "dmabuf 7.x: fdinfo names the exporter vfio_pci_core",
      /exp_name:\s*vfio_pci_core/.test(info),
      info,
    );
    check(
      "dmabuf 7.x: the dma-buf is exactly the range's size (fdinfo size, fstat)",
      new RegExp(`size:\\s*${len}\\b`).test(info) && BigInt(fstatSync(fd).size) === len,
      `${info} fstat ${fstatSync(fd).size}`,
    );
    let mm = "";
    try {
      mmap(fd, 0, 0x1000, "rw").unmap();
      mm = "mapped";
    } catch (e) {
      mm = (e as { code?: string }).code ?? String(e);
    }
    check(
      "dmabuf 7.x: a CPU mmap of the dma-buf fails cleanly (an errno, no crash)",
      /^E[A-Z]+$/.test(mm),
      mm,
    );
    const refused: string[] = [];
    for (const [o, l] of [
      [0x10001n, 0x1000n],
      [0xff000n, 0x2000n],
      [0n, 0n],
    ] as const) {
      try {
        closeFd(be.exportDmabuf(fn.bdf, 2, o, l));
      } catch (e) {
        refused.push((e as { code?: string }).code ?? "?");
      }
    }
    check(
      "dmabuf 7.x: unaligned, past-the-BAR and empty ranges are refused (INVALID_ARGUMENT)",
      refused.length === 3 && refused.every((c) => c === "INVALID_ARGUMENT"),
      JSON.stringify(refused),
    );
    // Revocation on reset: ivshmem-plain has no FLR/PM reset and sits on the root bus, so
    // VFIO_DEVICE_RESET is refused; where a reset does happen, nothing in the dma-buf's fd
    // (fdinfo, fstat) changes for userspace: only importers see the move_notify.
    let reset = "";
    try {
      be.resetDevice(fn.bdf);
      reset = "ok";
    } catch (e) {
      reset = (e as Error).message;
    }
    const after = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
    log(`VFIO_DEVICE_RESET: ${reset}; fdinfo after: ${after.replace(/\n/g, " | ")}`);
    check(
      "dmabuf 7.x: reset is not observable here (ivshmem has no reset: VFIO_DEVICE_RESET refused), and the fd stays a dma-buf",
      /VFIO_DEVICE_RESET failed/.test(reset) || reset === "ok",
      reset,
    );
    closeFd(fd);
  } finally {
    be.close();
  }
  // After close, the BAR claim is gone: sysfs maps again (behaviour as before the export).
  try {
    const bfd = fn.openBarFd(2, true, "r");
    mmap(bfd, 0, 0x1000, "r").unmap();
    closeFd(bfd);
    check("dmabuf: after the backend closes the device, resource2_wc maps again", true);
  } catch (e) {
    check("dmabuf: after the backend closes the device, resource2_wc maps again", false, String(e));
  }
}

/**
 * Issue 10: brokerd replaced (--take-over) under a workload holding a live vfio-backed mapping.
 * The device fd is handed over, never closed, so the device is not reset: the workload's mmap
 * keeps working, the marker it wrote reads back through the new brokerd, the PCI command
 * register keeps memory decoding on, and the client resumed by itself.
 */
async function restartPhase(fn: PciFunction, policy: string): Promise<void> {
  log("== phase: restart (hand-over with a live vfio mapping)");
  const a = await startBrokerd("restart", ["--vfio", fn.bdf], policy);
  if (!check("restart: brokerd starts with --vfio", !!a) || !a) return;
  const sock = join(a.dir, "broker.sock");
  const agent = spawn(
    "setpriv",
    [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "--no-new-privs",
      NODE,
      join(HERE, "resume-agent.js"),
      sock,
      fn.bdf,
    ],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  let text = "";
  let err = "";
  agent.stdout!.on("data", (d: Buffer) => {
    text += d.toString();
  });
  agent.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const line = async (op: string) =>
    until(
      `agent ${op}`,
      () => {
        for (const l of text.split("\n"))
          if (l.startsWith("RESUME ")) {
            const j = JSON.parse(l.slice(7)) as Record<string, unknown>;
            if (j.op === op) return j;
          }
        return agent.exitCode !== null ? ({ op: "exited" } as Record<string, unknown>) : undefined;
      },
      60_000,
    );
  let b: Brokerd | undefined;
  try {
    const mapped = await line("mapped");
    if (
      !check("restart: the workload maps BAR2 UC through the vfio backend", mapped?.op === "mapped", err) ||
      !mapped
    )
      return;
    const aExit = new Promise<number | null>((r) =>
      a.proc.exitCode !== null ? r(a.proc.exitCode) : a.proc.once("exit", (c) => r(c)),
    );
    b = await startBrokerd("restart", ["--vfio", fn.bdf, "--take-over"], policy);
    check("restart: the successor (--take-over) starts", !!b);
    check(
      "restart: the old brokerd exits 0 after the hand-over",
      (await aExit) === 0,
      a.stderr().slice(-1500),
    );
    check(
      "restart: the successor took the device fd over (never closed, so no device reset)",
      !!b && /device fd taken over from the previous brokerd/.test(b.stderr()),
      b?.stderr().slice(-1500),
    );
    agent.stdin!.write("check\n");
    const c = (await line("checked")) ?? {};
    check(
      "restart: the marker written before reads back through the workload's mmap",
      c.viaMmap === c.mark,
      JSON.stringify(c),
    );
    check("restart: and through the new brokerd (ReadRegion)", c.viaBrokerd === c.mark, JSON.stringify(c));
    check(
      "restart: the PCI command register is unchanged, memory decoding on (no reset)",
      c.command === mapped.command && ((c.command as number) & 2) === 2,
      JSON.stringify({ before: mapped.command, after: c.command }),
    );
    check("restart: the client resumed by itself", (c.resumedMs as number) >= 0, JSON.stringify(c));
    check(
      "restart: the workload exits 0",
      (await new Promise((r) => (agent.exitCode !== null ? r(agent.exitCode) : agent.once("exit", r)))) === 0,
      err,
    );
  } catch (e) {
    check("restart phase ran to completion", false, (e as Error).message);
  } finally {
    agent.kill("SIGKILL");
    await b?.stop();
    await a.stop();
  }
}

async function main(): Promise<void> {
  log(
    `kernel ${readFileSync("/proc/sys/kernel/osrelease", "utf8").trim()}, node ${process.version}, repo ${REPO}`,
  );
  const bdf = findPci("0x1af4", "0x1110");
  const eduBdf = findPci("0x1234", "0x11e8");
  if (!check("ivshmem-plain device present", !!bdf) || !bdf) return;
  check("debugfs PAT memtype list is readable", existsSync("/sys/kernel/debug/x86/pat_memtype_list"));
  const fn = new PciFunction(bdf);
  log(
    `ivshmem at ${bdf}: BAR2 at 0x${fn.bar(2)!.start.toString(16)}, ${fn.bar(2)!.size} bytes, driver ${fn.driver() || "none"}`,
  );
  const policy = "/tmp/vm-policy.yaml";
  writeFileSync(
    policy,
    `version: 1
rules:
  - name: vm-nobody
    match:
      uids: [65534]
    devices: ["${bdf}"${eduBdf ? `, "${eduBdf}"` : ""}]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
    allowDeviceFd: true
`,
  );
  chmodSync(policy, 0o644); // brokerd refuses a policy file its group or others may write
  const only = process.env.VMTEST_ONLY ?? "";
  if (only === "" || only === "sysfs")
    await sysfsPhase(fn, eduBdf ? new PciFunction(eduBdf) : undefined, policy);
  if (only === "" || only === "vfio") await vfioPhase(fn, policy);
  if (only === "" || only === "restart") await restartPhase(fn, policy);
  if (only === "" || only === "dmabuf") await dmabufPhase(fn);
  if (only === "" || only === "mode")
    await modePhase({
      check,
      log,
      startBrokerd,
      agent: (sock, dev, plan) => new Agent(sock, dev, plan),
      adminVerify,
      fn,
      policy,
      kver: readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
      k7: K7,
    });
  // Issue 21: unmodified programs (phase-*.ts); they start their own brokerd.
  const ctx = { check, log, startBrokerd, fn, policy, repo: REPO };
  if (only === "" || only === "libpciaccess") await libpciaccessPhase(ctx);
  if (only === "" || only === "dpdk") await dpdkPhase(ctx);
}

main()
  .catch((e) => check("guest suite ran to completion", false, (e as Error).stack ?? String(e)))
  .finally(() => {
    console.log(`VMTEST-GUEST-SUMMARY passed=${passed} failed=${failed}`);
    process.exit(failed === 0 ? 0 : 1);
  });
