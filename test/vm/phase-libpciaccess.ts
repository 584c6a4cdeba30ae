// VM suite, guest side, issue 21: Debian's unmodified libpciaccess maps ivshmem BAR2 write-combining
// (pci_device_map_range with PCI_DEV_MAP_FLAG_WRITE_COMBINE | PCI_DEV_MAP_FLAG_WRITABLE, i.e. an open
// and mmap of sysfs resource2_wc) through test/vm/programs/pciaccess-map: first as root with no shim
// (proves the program and the expectations), then as uid 65534 with no shim (refused: the file is
// root's), then as uid 65534 under LD_PRELOAD of libvfio-broker-preload.so against brokerd --sysfs.
// Each mapping is checked in the guest kernel's PAT list while live and after release; run.sh checks
// the bytes it wrote in the host's shared-memory file (patterns LIBPCIACCESS-*). It never binds or
// unbinds a driver: the sysfs backend maps whatever the device is bound to (none, or vfio-pci with no
// VFIO device fd open, which is how the earlier phases leave it).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { verifyPciAttribute } from "@vfio-broker/brokerd/devices/pci-attribute";
import { AdminService, Attribute, BackingKind, createClient } from "@vfio-broker/proto";
import type { Brokerd } from "./guest.js";
import type { PhaseContext } from "./phase-context.js";
import { Program, programPath, type RunAs } from "./program-run.js";

/** Where each run writes its pattern (BAR2 offsets; run.sh checks them on the host). */
export const LIBPCIACCESS_PATTERNS = {
  root: [0xc0100, "LIBPCIACCESS-WC-root"],
  shim: [0xc1100, "LIBPCIACCESS-WC-uid65534"],
} as const;

const HOST_PATTERN = "HOST-wrote-this-before-boot"; // run.sh writes it at BAR2+0x8000 before boot

function pat(ctx: PhaseContext, size: bigint): string {
  const v = verifyPciAttribute(ctx.fn, 2, 0n, size);
  return v.unavailable ? `unavailable (${v.unavailable})` : v.patTypes.join(",") || "none";
}

/** brokerd's own view (AdminService.ListMappings) of the mappings it holds: "" when none. */
async function brokerdMappings(b: Brokerd): Promise<string> {
  const admin = createClient(AdminService, `unix:${b.dir}.private/admin.sock`);
  try {
    const r = await admin.listMappings({});
    return r.mappings
      .map(
        (m) =>
          `uid ${m.identity?.uid} pid ${m.identity?.pid} region ${m.mapping?.regionIndex} length ${m.mapping?.length} ` +
          `${BackingKind[m.mapping?.backing ?? 0]} ${Attribute[m.mapping?.effectiveAttribute ?? 0]}`,
      )
      .join("; ");
  } catch (e) {
    return `ListMappings failed: ${(e as Error).message}`;
  } finally {
    admin.close();
  }
}

/**
 * One run of the program over the whole BAR2: maps, writes, PAT while live, unmaps, PAT after; with
 * brokerd (the shim's runs), also what brokerd holds for it while live and after.
 */
async function mapRun(
  ctx: PhaseContext,
  label: string,
  as: RunAs,
  at: number,
  text: string,
  b?: Brokerd,
): Promise<void> {
  const size = ctx.fn.bar(2)!.size;
  const p = new Program(
    "PCIACCESS",
    programPath(ctx.repo, "pciaccess-map"),
    [ctx.fn.bdf, "2", "0", `0x${size.toString(16)}`, `0x${at.toString(16)}`, text, "0x8000"],
    as,
    ctx.log,
  );
  const m = await p.next();
  const mapped = ctx.check(
    `libpciaccess ${label}: pci_device_map_range(WRITE_COMBINE|WRITABLE) of ${ctx.fn.bdf} BAR2 succeeds and reads the host's pre-boot pattern`,
    m?.op === "mapped" && m.uid === as.uid && m.read === HOST_PATTERN,
    `${JSON.stringify(m)} stderr: ${p.stderr().slice(-1500)}`,
  );
  if (mapped) {
    const got = pat(ctx, size);
    ctx.check(
      `libpciaccess ${label}: PAT memtype of BAR2 (phys 0x${ctx.fn.bar(2)!.start.toString(16)}) while mapped: ${got}`,
      got === "write-combining",
      "want write-combining",
    );
    if (b) {
      const held = await brokerdMappings(b);
      const want = `uid 65534 pid ${p.proc.pid} region 2 length ${size} SYSFS_WC WC`;
      ctx.check(`libpciaccess ${label}: brokerd holds the mapping: ${held}`, held === want, `want ${want}`);
    }
  }
  p.resume();
  const u = await p.next();
  const code = await p.exited();
  if (!mapped) return;
  ctx.check(
    `libpciaccess ${label}: pci_device_unmap_range, exit 0`,
    u?.op === "unmapped" && code === 0,
    `${JSON.stringify(u)} exit ${code} ${p.stderr().slice(-800)}`,
  );
  const after = pat(ctx, size);
  ctx.check(`libpciaccess ${label}: after exit no PAT entry over BAR2`, after === "none", after);
  if (b) {
    // brokerd ends the session when it sees the socket close: wait for that (up to 20 s).
    let held = await brokerdMappings(b);
    for (let i = 0; i < 100 && held !== ""; i++) {
      await new Promise((r) => setTimeout(r, 200));
      held = await brokerdMappings(b);
    }
    ctx.check(`libpciaccess ${label}: after exit brokerd holds no mapping`, held === "", held);
  }
}

export async function libpciaccessPhase(ctx: PhaseContext): Promise<void> {
  ctx.log(`== phase: libpciaccess (Debian's, unmodified) maps BAR2 WC; driver ${ctx.fn.driver() || "none"}`);
  const prog = programPath(ctx.repo, "pciaccess-map");
  if (!ctx.check("libpciaccess: test/vm/programs/build/pciaccess-map is built", existsSync(prog), prog))
    return;
  await mapRun(ctx, "as root, no shim", { uid: 0 }, ...LIBPCIACCESS_PATTERNS.root);

  const size = ctx.fn.bar(2)!.size;
  const plain = new Program(
    "PCIACCESS",
    prog,
    [ctx.fn.bdf, "2", "0", `0x${size.toString(16)}`, "0x100", "never-written", "0x8000"],
    { uid: 65534 },
    ctx.log,
  );
  const r = await plain.next();
  ctx.check(
    "libpciaccess as uid 65534 without the shim: pci_device_map_range is refused (EACCES: resource2_wc is root's)",
    r?.op === "error" && r.what === "pci_device_map_range" && r.errno === 13,
    JSON.stringify(r),
  );
  plain.resume();
  await plain.exited();

  const shim = join(ctx.repo, "clients/c/build/libvfio-broker-preload.so");
  if (!ctx.check("libpciaccess: clients/c/build/libvfio-broker-preload.so is built", existsSync(shim), shim))
    return;
  const b = await ctx.startBrokerd("pciaccess", ["--sysfs", ctx.fn.bdf], ctx.policy);
  if (!ctx.check("libpciaccess: brokerd starts with --sysfs on the ivshmem device", !!b) || !b) return;
  try {
    await mapRun(
      ctx,
      "as uid 65534, LD_PRELOAD shim, brokerd --sysfs",
      { uid: 65534, env: { LD_PRELOAD: shim, VFIO_BROKER_SOCKET: join(b.dir, "broker.sock") } },
      ...LIBPCIACCESS_PATTERNS.shim,
      b,
    );
  } finally {
    await b.stop();
  }
}
