// Access: ReadRegion and WriteRegion, brokerd reading or writing device memory on a client's
// behalf (small, bounded accesses; bulk traffic goes through a mapping). Each access is checked
// against the policy's access rules, the region's flags and, inside a mapping, its prot. Owns those
// checks; never books pages or changes a mapping.
import type { Core } from "../core/context.js";
import type { AttributeCheck } from "../devices/backend.js";
import { denied, invalid, unavailable } from "../errors.js";
import type { Session } from "../identity/session.js";
import { authorizeAccess } from "../policy/index.js";
import type { Mapping } from "./device-file.js";
import { checkAccess } from "./range.js";

export class Access {
  constructor(private readonly core: Core) {}

  read(s: Session, dfId: bigint, offset: bigint, length: number): Buffer {
    const { core } = this;
    const df = core.guard.deviceFile(s, dfId);
    checkAccess(`device file ${dfId}`, 0n, length, BigInt(length), core.opts.maxAccessBytes);
    const r = df.resolve(offset, length);
    core.guard.decide(
      s,
      authorizeAccess(core.policy.current, s.identity, {
        device: df.device.id,
        region: r.region.name,
        write: false,
      }),
    );
    if (!r.region.readable) throw invalid(`${r.region.name} is not readable`, "access");
    return core.devices.get(df.device.id).backend.read(df.device.id, r.region.index, r.regionOffset, length);
  }

  write(s: Session, dfId: bigint, offset: bigint, data: Uint8Array): number {
    const { core } = this;
    const df = core.guard.deviceFile(s, dfId);
    checkAccess(`device file ${dfId}`, 0n, data.length, BigInt(data.length), core.opts.maxAccessBytes);
    const r = df.resolve(offset, data.length);
    core.guard.decide(
      s,
      authorizeAccess(core.policy.current, s.identity, {
        device: df.device.id,
        region: r.region.name,
        write: true,
      }),
    );
    if (!r.region.writable) throw invalid(`${r.region.name} is read-only`, "access");
    if (r.mapping && r.mapping.prot !== "rw")
      throw denied(
        `mapping ${r.mapping.cookie} is read-only (PROT_READ); write through a PROT_READ_WRITE mapping`,
        "prot",
      );
    const dev = core.devices.get(df.device.id);
    if (dev.health !== "healthy")
      throw unavailable(`device ${df.device.id} is ${dev.health}`, `device_${dev.health}`);
    return dev.backend.write(df.device.id, r.region.index, r.regionOffset, data);
  }

  /** The kernel's view of a live mapping's memory type (real devices), next to what we reported. */
  verify(m: Mapping): AttributeCheck {
    const df = m.deviceFile;
    const backend = this.core.devices.get(df.device.id).backend;
    return backend.verifyAttribute
      ? backend.verifyAttribute(df.device.id, m.region.index, m.regionOffset, m.length)
      : {
          physStart: 0n,
          length: m.length,
          patTypes: [],
          attributes: [],
          unavailable: `the ${backend.name} backend has no physical memory types to check (its BARs are ordinary memory)`,
        };
  }
}
