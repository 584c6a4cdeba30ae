// VM suite, guest side, issue 21: DPDK from Debian (22.11, unmodified) on its uio path, recorded as
// far as it goes. The device is bound to uio_pci_generic (ivshmem-plain has no INTx pin: the driver
// binds without interrupts), and test/vm/programs/dpdk-uio-map runs rte_eal_init and
// rte_pci_map_device on the device the PCI bus scan found. Two runs, each with its expected outcome:
// - root, hugepages, IOVA as PA (everything uio needs): the map fails with "Interrupt instance
//   unallocated": the PCI bus allocates a device's interrupt instance only when a registered driver
//   probes it, and an application cannot register one with Debian's packages (rte_pci_register and
//   struct rte_pci_driver are in the driver SDK, which libdpdk-dev does not ship);
// - uid 65534 under LD_PRELOAD of libvfio-broker-preload.so against brokerd --sysfs: EAL has no
//   physical addresses (Linux zeroes pagemap's frame numbers without CAP_SYS_ADMIN), and DPDK maps a
//   uio device only with them, so rte_pci_map_device refuses before it opens /dev/uioN or any
//   resourceN file: nothing reaches the shim, whatever the shim does.
// A check that passes here records an outcome; it would fail if DPDK started mapping (then this
// phase must check PAT and the bytes instead). It binds the device to uio_pci_generic and, when
// done, unbinds it and clears driver_override: the device is left unbound.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PhaseContext } from "./phase-context.js";
import { Program, programPath, type RunAs } from "./program-run.js";

function sysfsWrite(path: string, value: string): string {
  try {
    writeFileSync(path, value);
    return "";
  } catch (e) {
    return `${path}: ${(e as Error).message}`;
  }
}

/** driver_override + drivers_probe; "" or what failed. */
function bindTo(ctx: PhaseContext, drv: string): string {
  const dev = `/sys/bus/pci/devices/${ctx.fn.bdf}`;
  const cur = ctx.fn.driver();
  if (cur === drv) return "";
  const errs = [sysfsWrite(join(dev, "driver_override"), drv || "\n")];
  if (cur) errs.push(sysfsWrite(join(dev, "driver/unbind"), ctx.fn.bdf));
  if (drv) errs.push(sysfsWrite("/sys/bus/pci/drivers_probe", ctx.fn.bdf));
  return errs.filter((e) => e).join("; ");
}

const HUGE_DIR = "/dev/hugepages";
const HUGE_PAGES = 24; // 2 MiB each: 48 MiB of the guest's memory, given back at the end

/** Reserves 2 MiB pages and mounts hugetlbfs (world-writable, as for any non-root DPDK user). */
function hugepages(on: boolean): string {
  const errs = [];
  if (on) {
    errs.push(sysfsWrite("/proc/sys/vm/nr_hugepages", String(HUGE_PAGES)));
    mkdirSync(HUGE_DIR, { recursive: true });
    const m = spawnSync("mount", ["-t", "hugetlbfs", "-o", "mode=1777", "nodev", HUGE_DIR], {
      encoding: "utf8",
    });
    if (m.status !== 0) errs.push(`mount hugetlbfs: ${m.stderr}`);
  } else {
    spawnSync("umount", [HUGE_DIR]);
    errs.push(sysfsWrite("/proc/sys/vm/nr_hugepages", "0"));
  }
  return errs.filter((e) => e).join("; ");
}

/** EAL options, then the program's own arguments (it writes nothing: no run is expected to map). */
function ealArgs(ctx: PhaseContext, iovaPa: boolean): string[] {
  // Hugepages: EAL has physical addresses only with them (and a readable pagemap); --in-memory: no
  // runtime files; -a: only this device; -l 0: one lcore.
  return [
    "--in-memory",
    "--huge-dir",
    HUGE_DIR,
    "-m",
    "16",
    "--no-telemetry",
    "--log-level=lib.eal:debug", // "Interrupt instance unallocated" is a debug message
    ...(iovaPa ? ["--iova-mode=pa"] : []),
    "-l",
    "0",
    "-a",
    ctx.fn.bdf,
    "--",
    ctx.fn.bdf,
    "2",
    "0x100",
    "DPDK-never-written",
    "0x8000",
  ];
}

/** Runs the program to its end (resuming it if it ever maps); its report line and stderr. */
async function run(ctx: PhaseContext, as: RunAs, iovaPa: boolean): Promise<{ r: string; err: string }> {
  const p = new Program("DPDK", programPath(ctx.repo, "dpdk-uio-map"), ealArgs(ctx, iovaPa), as, ctx.log);
  const l = await p.next();
  p.resume();
  await p.exited();
  const err = p.stderr();
  for (const line of err.split("\n").filter((x) => /rror|unavailable|unallocated|annot/.test(x)))
    ctx.log(`  DPDK (uid ${as.uid}) stderr: ${line}`);
  return { r: JSON.stringify(l ?? null), err };
}

export async function dpdkPhase(ctx: PhaseContext): Promise<void> {
  ctx.log(`== phase: DPDK 22.11 (Debian's) uio path; driver ${ctx.fn.driver() || "none"}`);
  const prog = programPath(ctx.repo, "dpdk-uio-map");
  if (!ctx.check("DPDK: test/vm/programs/build/dpdk-uio-map is built", existsSync(prog), prog)) return;
  const dev = `/sys/bus/pci/devices/${ctx.fn.bdf}`;
  const bound = bindTo(ctx, "uio_pci_generic");
  const uio = existsSync(join(dev, "uio")) ? readdirSync(join(dev, "uio")) : [];
  const huge = bound === "" ? hugepages(true) : "not tried";
  try {
    if (
      !ctx.check(
        `DPDK: uio_pci_generic binds to ivshmem-plain (no interrupt pin) as ${uio[0] ? `/dev/${uio[0]}` : "a uio device"}; ${HUGE_PAGES} hugepages at ${HUGE_DIR}`,
        bound === "" && ctx.fn.driver() === "uio_pci_generic" && uio.length === 1 && huge === "",
        `${bound} driver ${ctx.fn.driver() || "none"} uio ${JSON.stringify(uio)} hugepages: ${huge}`,
      )
    )
      return;
    const root = await run(ctx, { uid: 0 }, true);
    ctx.check(
      "DPDK 22.11 as root (hugepages, IOVA as PA), recorded outcome: cannot be driven from an application: rte_pci_map_device fails with 'Interrupt instance unallocated' (only a registered PCI driver's probe allocates it; rte_pci_register is in the driver SDK, not in Debian's libdpdk-dev)",
      /"what":"rte_pci_map_device"/.test(root.r) && /Interrupt instance unallocated/.test(root.err),
      `${root.r} stderr: ${root.err.slice(-1500)}`,
    );
    const shim = join(ctx.repo, "clients/c/build/libvfio-broker-preload.so");
    if (!ctx.check("DPDK: clients/c/build/libvfio-broker-preload.so is built", existsSync(shim), shim))
      return;
    const b = await ctx.startBrokerd("dpdk", ["--sysfs", ctx.fn.bdf], ctx.policy);
    if (!ctx.check("DPDK: brokerd starts with --sysfs on the uio_pci_generic-bound device", !!b) || !b)
      return;
    try {
      const env = { LD_PRELOAD: shim, VFIO_BROKER_SOCKET: join(b.dir, "broker.sock") };
      const nobody = await run(ctx, { uid: 65534, env }, false);
      ctx.check(
        "DPDK 22.11 as uid 65534 through the shim, recorded outcome: cannot be driven: EAL has no physical addresses (pagemap needs CAP_SYS_ADMIN) and rte_pci_map_device refuses a uio device without them, before opening any file the shim could serve",
        /"what":"rte_pci_map_device"/.test(nobody.r) && /Physical addresses are unavailable/.test(nobody.err),
        `${nobody.r} stderr: ${nobody.err.slice(-1500)}`,
      );
    } finally {
      await b.stop();
      ctx.log("DPDK: brokerd stopped");
    }
  } finally {
    hugepages(false);
    const back = bindTo(ctx, "");
    ctx.log(`DPDK: hugepages released, device unbound ${back || "(ok)"}`);
    ctx.check(
      "DPDK: the device is unbound from uio_pci_generic again",
      back === "" && ctx.fn.driver() === "",
      back,
    );
  }
}
