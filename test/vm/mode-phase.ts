// VM suite phase "mode": the per-device mode on a real kernel. brokerd serves the ivshmem device in
// mode sysfs-wc while it is bound to vfio-pci (--pci BDF=sysfs-wc --vfio-bind), and the guest
// checks what only the kernel can tell: brokerd holds no fd under /dev/vfio (nor /dev/iommu), a
// uid-65534 client's WC mapping of BAR2 is booked write-combining in x86 PAT (on 7.x too, where
// mode vfio gives no WC), AdminService.SetDeviceMode is refused while that mapping is live (naming
// the holder), and once it is released the switch to vfio opens a VFIO device fd (and on 7.x takes
// WC away, saying why), and the switch back closes it and gives WC again.
// Expectations per kernel: 6.1 offers WC in both modes; 7.x only in sysfs-wc.
// Registered in guest.ts (VMTEST_ONLY=mode); not a node:test file.
import { readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { verifyPciAttribute } from "@vfio-broker/brokerd/devices/pci-attribute";
import type { PciFunction } from "@vfio-broker/brokerd/devices/pci-function";
import { AdminService, Attribute, createClient, DeviceMode } from "@vfio-broker/proto";
import type { Step } from "./agent.js";

type AgentLine = Record<string, unknown> & { op: string };

interface BrokerdLike {
  proc: { pid?: number | undefined; exitCode: number | null };
  dir: string;
  stop(): Promise<void>;
}

interface AgentLike {
  expect(op: string): Promise<AgentLine>;
  resume(): void;
  exited(): Promise<number | null>;
}

/** What guest.ts lends the phase (its own helpers, so every phase reports the same way). */
export interface ModeKit {
  check(name: string, ok: boolean, detail?: string): boolean;
  log(m: string): void;
  startBrokerd(tag: string, args: string[], policy: string): Promise<BrokerdLike | undefined>;
  agent(socket: string, deviceId: string, plan: Step[]): AgentLike;
  adminVerify(b: BrokerdLike, l: AgentLine, name: string, want: "WC" | "UC"): Promise<void>;
  fn: PciFunction;
  policy: string;
  kver: string;
  k7: boolean;
}

/** brokerd's fds that lead to VFIO or iommufd (a sysfs-wc device must have none). */
function vfioFds(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const t = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (t.startsWith("/dev/vfio") || t === "/dev/iommu" || t.startsWith("anon_inode:[vfio")) out.push(t);
    } catch {
      /* closed meanwhile */
    }
  }
  return out;
}

/** A uid-65534 client's WC map of BAR2 at `offset`, writing `text`, kept live until resumed. */
function wcPlan(offset: number, text: string): Step[] {
  return [
    { op: "map", name: "wc", region: 2, offset, length: 0x1000, attr: "WC", write: { at: 0x100, text } },
    { op: "pause", tag: "wc-live" },
    { op: "release", name: "wc" },
  ];
}

/** The PAT types over [BAR2 + offset, +len), and a result line naming mode and memory type. */
function patLine(k: ModeKit, label: string, offset: number, want: string): void {
  const v = verifyPciAttribute(k.fn, 2, BigInt(offset), 0x1000n);
  const got = v.patTypes.join(",") || "none";
  k.check(
    `${label}: mode sysfs-wc, ${k.fn.bdf} bound to ${k.fn.driver() || "no driver"}, BAR2+0x${offset.toString(16)} ` +
      `PAT memory type ${got} (want ${want})`,
    v.unavailable === "" && got === want,
    v.unavailable || `PAT list shows ${got}`,
  );
}

export async function modePhase(k: ModeKit): Promise<void> {
  k.log("== phase: device mode (sysfs-wc on a vfio-pci-bound device; SetDeviceMode)");
  const bdf = k.fn.bdf;
  const b = await k.startBrokerd("mode", ["--pci", `${bdf}=sysfs-wc`, "--vfio-bind"], k.policy);
  if (!k.check("mode: brokerd starts with --pci BDF=sysfs-wc --vfio-bind", !!b) || !b) return;
  const pid = b.proc.pid ?? 0;
  const admin = createClient(AdminService, `unix:${b.dir}.private/admin.sock`);
  const device = async () => (await admin.listAllDevices({})).devices.find((d) => d.id === bdf);
  const bar2Wc = (d: Awaited<ReturnType<typeof device>>) =>
    !!d?.regions.find((r) => r.index === 2)?.attributes.includes(Attribute.WC);
  try {
    k.check("mode: the function is bound to vfio-pci", k.fn.driver() === "vfio-pci", k.fn.driver());
    const d0 = await device();
    k.check(
      "mode: ListAllDevices reports mode SYSFS_WC, BAR2 offers WC",
      d0?.mode === DeviceMode.SYSFS_WC && bar2Wc(d0),
      JSON.stringify({ mode: d0?.mode, notes: d0?.modeNotes }),
    );
    k.check(
      "mode sysfs-wc: brokerd holds no fd under /dev/vfio or /dev/iommu",
      vfioFds(pid).length === 0,
      vfioFds(pid).join(" "),
    );

    const a = k.agent(join(b.dir, "broker.sock"), bdf, wcPlan(0xb0000, "MODE-SYSFSWC-uid65534"));
    const hello = await a.expect("hello");
    k.check(
      "mode: Hello (uid 65534) lists device mode SYSFS_WC",
      JSON.stringify(hello.deviceModes) === '["SYSFS_WC"]',
      JSON.stringify(hello),
    );
    const m = await a.expect("map");
    k.check(
      "mode sysfs-wc BAR2 WC: mapped with backing SYSFS_WC, effective WC",
      m.ok === true && m.backing === "SYSFS_WC" && m.effective === "WC",
      JSON.stringify(m),
    );
    await a.expect("pause");
    patLine(k, `[${k.kver}] sysfs-wc live mapping`, 0xb0000, "write-combining");
    await k.adminVerify(b, m, "mode sysfs-wc BAR2 WC", "WC");
    k.check("mode sysfs-wc: still no VFIO fd in brokerd while a mapping is live", vfioFds(pid).length === 0);
    try {
      await admin.setDeviceMode({ deviceId: bdf, mode: DeviceMode.VFIO, reason: "vm test, mapping live" });
      k.check("mode: SetDeviceMode(vfio) is refused while a mapping is live", false, "it was accepted");
    } catch (e) {
      const msg = (e as Error).message;
      k.check(
        "mode: SetDeviceMode(vfio) is refused while a mapping is live, naming the holder",
        (e as { code?: number }).code === 9 /* FAILED_PRECONDITION */ &&
          /in use/.test(msg) &&
          msg.includes("uid 65534"),
        msg,
      );
    }
    a.resume();
    await a.expect("release");
    k.check("mode: agent exits 0", (await a.exited()) === 0);
    patLine(k, `[${k.kver}] sysfs-wc released`, 0xb0000, "none");

    const toVfio = await admin.setDeviceMode({ deviceId: bdf, mode: DeviceMode.VFIO, reason: "vm test" });
    const dv = toVfio.device;
    k.check(
      "mode: SetDeviceMode(vfio) once nothing holds it: mode VFIO, previous SYSFS_WC",
      dv?.mode === DeviceMode.VFIO && toVfio.previousMode === DeviceMode.SYSFS_WC,
      JSON.stringify({ mode: dv?.mode, prev: toVfio.previousMode }),
    );
    k.check("mode vfio: brokerd now holds a VFIO fd (positive control)", vfioFds(pid).length > 0);
    k.check(
      k.k7
        ? "mode vfio on 7.x: BAR2 offers no WC, and mode_notes say why"
        : "mode vfio on 6.1: BAR2 still offers WC (sysfs maps while the device fd is open)",
      k.k7 ? !bar2Wc(dv) && (dv?.modeNotes ?? []).some((n) => /no WC in mode vfio/.test(n)) : bar2Wc(dv),
      JSON.stringify({ attrs: dv?.regions.find((r) => r.index === 2)?.attributes, notes: dv?.modeNotes }),
    );

    const back = await admin.setDeviceMode({ deviceId: bdf, mode: DeviceMode.SYSFS_WC, reason: "vm test" });
    k.check(
      "mode: SetDeviceMode(sysfs-wc) back: no VFIO fd left, BAR2 offers WC again (its probe mapped resource2_wc)",
      back.device?.mode === DeviceMode.SYSFS_WC && vfioFds(pid).length === 0 && bar2Wc(back.device),
      JSON.stringify({ fds: vfioFds(pid), notes: back.device?.modeNotes }),
    );
    const a2 = k.agent(join(b.dir, "broker.sock"), bdf, wcPlan(0xc0000, "MODE-SYSFSWC-AGAIN"));
    await a2.expect("hello");
    const m2 = await a2.expect("map");
    k.check(
      "mode sysfs-wc after a vfio spell: WC mapping again",
      m2.ok === true && m2.backing === "SYSFS_WC" && m2.effective === "WC",
      JSON.stringify(m2),
    );
    await a2.expect("pause");
    patLine(k, `[${k.kver}] sysfs-wc after vfio`, 0xc0000, "write-combining");
    a2.resume();
    await a2.expect("release");
    await a2.exited();
  } catch (e) {
    k.check("mode phase ran to completion", false, (e as Error).stack ?? String(e));
  } finally {
    admin.close();
    await b.stop();
    k.check("mode: brokerd exits on SIGTERM", b.proc.exitCode === 0, `exit ${b.proc.exitCode}`);
  }
}
