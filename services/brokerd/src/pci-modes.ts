// The per-function mode part of brokerd's configuration: which PCI functions it serves and in which
// mode, from `--pci BDF=MODE[,BDF=MODE]` (or the config key "pci", a {"BDF": "MODE"} object or the
// same string), and from the older `--sysfs BDFs` (mode sysfs-wc) and `--vfio BDFs` (mode vfio).
// Pure: takes the option values as config.ts collected them, reads no file; errors say what to fix.
import { DEVICE_MODES, type DeviceMode } from "./devices/backend.js";
import { normalizeBdf } from "./devices/pci-resources.js";
import { invalid } from "./errors.js";

/** "0000:00:01.0,0000:00:02.0" (or a JSON list from --config) -> BDFs. */
export function bdfList(v: string | boolean | undefined): string[] {
  if (v === undefined || typeof v === "boolean") return [];
  const t = v.trim();
  const items: unknown = t.startsWith("[") ? JSON.parse(t) : t.split(",");
  return (Array.isArray(items) ? items : []).map((x) => String(x).trim()).filter((x) => x !== "");
}

/** `--pci` text: "BDF=MODE,BDF=MODE", or a JSON object {"BDF": "MODE"} (the config file's form). */
function pciPairs(v: string | boolean | undefined): [string, string][] {
  if (v === undefined || typeof v === "boolean") return [];
  const t = v.trim();
  if (t.startsWith("{")) {
    const o: unknown = JSON.parse(t);
    return Object.entries(o as Record<string, unknown>).map(([k, m]) => [k, String(m)]);
  }
  return t
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x !== "")
    .map((x) => {
      const eq = x.lastIndexOf("=");
      if (eq <= 0)
        throw invalid(
          `--pci ${x}: write BDF=MODE, e.g. --pci 0000:3b:00.1=sysfs-wc (modes: ${DEVICE_MODES.join(", ")})`,
        );
      return [x.slice(0, eq), x.slice(eq + 1)] as [string, string];
    });
}

export interface PciModes {
  /** Functions served in mode sysfs-wc (the sysfs backend), in the order given. */
  sysfs: string[];
  /** Functions served in mode vfio (the vfio backend). */
  vfio: string[];
}

/**
 * The functions and their modes from --pci, --sysfs and --vfio together. A function named twice
 * with the same mode counts once; with two modes it is an error naming both sources.
 */
export function pciModes(raw: Record<string, string | boolean>): PciModes {
  const modes = new Map<string, { mode: DeviceMode; from: string }>();
  const add = (bdfText: string, modeText: string, from: string) => {
    const mode = modeText.trim() as DeviceMode;
    if (!DEVICE_MODES.includes(mode))
      throw invalid(`${from}: mode "${modeText}" for ${bdfText} is not one of ${DEVICE_MODES.join(", ")}`);
    const bdf = normalizeBdf(bdfText);
    const was = modes.get(bdf);
    if (was && was.mode !== mode)
      throw invalid(
        `${bdf} is given mode ${was.mode} (${was.from}) and mode ${mode} (${from}); give it one mode`,
      );
    if (!was) modes.set(bdf, { mode, from });
  };
  for (const [bdf, mode] of pciPairs(raw.pci)) add(bdf, mode, "--pci");
  for (const bdf of bdfList(raw.sysfs)) add(bdf, "sysfs-wc", "--sysfs");
  for (const bdf of bdfList(raw.vfio)) add(bdf, "vfio", "--vfio");
  const out: PciModes = { sysfs: [], vfio: [] };
  for (const [bdf, m] of modes) (m.mode === "vfio" ? out.vfio : out.sysfs).push(bdf);
  return out;
}
