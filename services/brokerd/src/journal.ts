// The audit journal: one JSON line per security-relevant event (sessions, device files,
// mappings, deliveries, denials, revocations, policy reloads), to a file or stderr. It subscribes
// to the Broker's events; it never changes state. Field names use DESIGN.md's vocabulary.
import { closeSync, openSync, writeSync } from "node:fs";
import type { Broker } from "./broker.js";
import type { Mapping } from "./grants/device-file.js";

export class Journal {
  /** Opened once (O_APPEND): one write per event, no open/close on the grant path. */
  private fd: number | undefined;

  constructor(private readonly path: string | undefined) {
    this.fd = path ? openSync(path, "a", 0o600) : undefined;
  }

  /** Opens the file again (after logrotate moved it away); brokerd does this on SIGHUP. */
  reopen(): void {
    if (!this.path) return;
    const old = this.fd;
    this.fd = openSync(this.path, "a", 0o600);
    if (old !== undefined) closeSync(old);
  }

  write(event: string, fields: Record<string, unknown>): void {
    const line = `${JSON.stringify({ ts: new Date().toISOString(), event, ...fields }, (_k, v) =>
      typeof v === "bigint" ? v.toString() : v,
    )}\n`;
    if (this.fd !== undefined) writeSync(this.fd, line);
    else process.stderr.write(line);
  }

  attach(broker: Broker): void {
    const mapping = (m: Mapping) => ({
      session: m.deviceFile.sessionId,
      deviceFile: m.deviceFile.id,
      device: m.deviceFile.device.id,
      region: m.region.name,
      cookie: m.cookie,
      regionOffset: m.regionOffset,
      length: m.length,
      requested: m.requestedAttribute,
      effective: m.effectiveAttribute,
      prot: m.prot,
      backing: m.backing.kind,
      deviceFd: m.backing.kind === "vfio-device-fd",
      rule: m.rule,
    });
    broker.on("session.open", (s) =>
      this.write("session.open", { session: s.id, ...s.identity, pidfd: undefined, groups: undefined }),
    );
    broker.on("session.end", (s, reason, ms) =>
      this.write("session.end", { session: s.id, reason, cleanupMs: ms }),
    );
    broker.on("devicefile.open", (df) =>
      this.write("devicefile.open", {
        session: df.sessionId,
        deviceFile: df.id,
        device: df.device.id,
        layout: df.layout,
      }),
    );
    broker.on("devicefile.close", (df, reason) =>
      this.write("devicefile.close", { session: df.sessionId, deviceFile: df.id, reason }),
    );
    broker.on("mapping.create", (m) => this.write("mapping.create", mapping(m)));
    broker.on("mapping.release", (m, reason) => this.write("mapping.release", { ...mapping(m), reason }));
    broker.on("fd.delivery", (result, m) => this.write("fd.delivery", { result, ...(m ? mapping(m) : {}) }));
    broker.on("denied", (s, reason, message) =>
      this.write("denied", { session: s?.id, uid: s?.identity.uid, pid: s?.identity.pid, reason, message }),
    );
    broker.on("revocation", (reason, count) => this.write("revocation", { reason, mappings: count }));
    broker.on("policy.reload", (ok, errors) =>
      this.write("policy.reload", { ok, errors, digest: broker.policy.digest, source: broker.policy.source }),
    );
    broker.on("device.health", (device, health) => this.write("device.health", { device, health }));
  }
}
