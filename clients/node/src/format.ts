// format.ts: owns how the CLI presents things: aligned tables, key: value blocks, JSON with bigints
// as decimal strings, and the one-line error message "vfio-broker: <what happened>; <what to do>"
// with its exit status. Pure: it returns strings, the caller prints them.
import { UsageError } from "./args.js";
import type { DeviceFileRegion, DeviceInfo } from "./convert.js";
import { BrokerClientError, FdChannelError, MappingGoneError } from "./errors.js";
import { formatSize, hex } from "./numbers.js";

/** Columns padded to their widest cell, two spaces apart; the last column is not padded. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(headers), ...rows.map(line)];
}

/** "key:   value" lines, keys padded to the widest. */
export function formatKeyValues(pairs: readonly (readonly [string, string])[]): string[] {
  const w = Math.max(...pairs.map(([k]) => k.length + 1));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(w)}  ${v}`);
}

/** JSON.stringify with bigints as decimal strings and Buffers as hex. */
export function toJson(value: unknown, indent?: number): string {
  return JSON.stringify(
    value,
    function (this: unknown, key: string, v: unknown) {
      if (typeof v === "bigint") return v.toString();
      const raw = (this as Record<string, unknown>)[key];
      if (Buffer.isBuffer(raw)) return raw.toString("hex");
      return v;
    },
    indent,
  );
}

function vendorDevice(d: DeviceInfo): string {
  return `${d.vendorId.toString(16).padStart(4, "0")}:${d.deviceId.toString(16).padStart(4, "0")}`;
}

export function devicesTable(devices: readonly DeviceInfo[]): string[] {
  if (devices.length === 0) return ["no devices: the broker's policy lets this identity open none"];
  return formatTable(
    ["ID", "BACKEND", "VENDOR:DEVICE", "REGIONS", "HEALTH", "DESCRIPTION"],
    devices.map((d) => [
      d.id,
      d.backend,
      vendorDevice(d),
      d.regions
        .filter((r) => r.size > 0n)
        .map((r) => r.name)
        .join(",") || "-",
      d.health,
      d.description,
    ]),
  );
}

/** r readable, w writable, m mappable, p prefetchable; "-" for each that is not. */
export function regionFlags(r: {
  readable: boolean;
  writable: boolean;
  mappable: boolean;
  prefetchable: boolean;
}): string {
  return `${r.readable ? "r" : "-"}${r.writable ? "w" : "-"}${r.mappable ? "m" : "-"}${r.prefetchable ? "p" : "-"}`;
}

export function regionsTable(regions: readonly DeviceFileRegion[]): string[] {
  return formatTable(
    ["INDEX", "NAME", "SIZE", "FLAGS", "ATTRS", "COOKIE"],
    regions.map((r) => [
      String(r.index),
      r.name,
      formatSize(r.size),
      regionFlags(r),
      r.attributes.join(",") || "-",
      hex(r.cookie),
    ]),
  );
}

export interface CliFailure {
  message: string;
  exitCode: number;
}

const CODE_HINTS: Record<string, string> = {
  PERMISSION_DENIED:
    "the broker's policy does not allow this; ask the operator to add a rule for your identity",
  NOT_FOUND: "run `vfio-broker devices` or `vfio-broker regions <dev>` to see what exists",
  INVALID_ARGUMENT: "fix the arguments (see vfio-broker --help)",
  RESOURCE_EXHAUSTED: "release mappings or device files you hold, or ask the operator for higher limits",
  FAILED_PRECONDITION:
    "the device or mapping is not in a state that allows this; check `vfio-broker devices`",
  UNAVAILABLE: "brokerd is draining or unreachable; retry later",
  DEADLINE_EXCEEDED: "brokerd did not answer in time; check that it is healthy",
  UNIMPLEMENTED: "this brokerd does not support the call; upgrade brokerd or the client",
  INTERNAL: "this is a brokerd bug; check brokerd's log",
};

const FD_HINTS: Record<string, string> = {
  EXPIRED: "the ticket expired before it was presented; retry (and check the machine is not overloaded)",
  ALREADY_USED: "tickets are single use; create a new mapping",
  WRONG_PEER: "present the ticket from the same process that called CreateMapping",
  UNKNOWN_TICKET: "create a new mapping and present its ticket",
  REVOKED: "the mapping was released or revoked before delivery; create a new one",
  CONNECT: "point at the fd channel with --fd-socket PATH or VFIO_BROKER_FD_SOCKET",
  TIMEOUT: "brokerd did not answer on the fd channel; check that it is healthy",
  UNDELIVERABLE:
    "the kernel refused to pass the fd; brokerd's operator must act (see the message), retrying fails the same way until then",
};

/** Any error from a CLI run -> the one line to print on stderr and the exit status. */
export function describeError(e: unknown, ctx: { socket: string }): CliFailure {
  if (e instanceof UsageError)
    return { message: `vfio-broker: ${e.message}; see vfio-broker --help`, exitCode: 2 };
  if (e instanceof BrokerClientError) {
    if (e.code === "UNAVAILABLE" && /not running at|not answering at|is not a socket/.test(e.details)) {
      return {
        message: `vfio-broker: ${e.details.replace("brokerd is not running", "brokerd isn't running")}; start brokerd, or point at its socket with --socket PATH or VFIO_BROKER_SOCKET`,
        exitCode: 1,
      };
    }
    if (e.code === "PERMISSION_DENIED" && /cannot reach/.test(e.details))
      return {
        message: `vfio-broker: ${e.details}; ask the operator for access to ${ctx.socket} (its directory must be traversable)`,
        exitCode: 1,
      };
    const hint = CODE_HINTS[e.code] ?? "check brokerd's log";
    const said = e.details.includes(";") ? `${e.details} (${e.code})` : `${e.details} (${e.code}); ${hint}`;
    return { message: `vfio-broker: ${said}`, exitCode: 1 };
  }
  if (e instanceof FdChannelError) {
    const hint = FD_HINTS[e.status] ?? "check brokerd's log";
    return { message: `vfio-broker: fd channel: ${e.details} (${e.status}); ${hint}`, exitCode: 1 };
  }
  if (e instanceof RangeError)
    return { message: `vfio-broker: ${e.message}; see vfio-broker --help`, exitCode: 2 };
  if (e instanceof MappingGoneError) return { message: `vfio-broker: ${e.message}`, exitCode: 3 };
  const msg = e instanceof Error ? e.message : String(e);
  return { message: `vfio-broker: ${msg}; set VFIO_BROKER_DEBUG=1 for a stack trace`, exitCode: 1 };
}
