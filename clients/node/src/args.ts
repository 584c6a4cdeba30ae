// args.ts: owns the `vfio-broker` command line: what commands and options exist, the help text, and
// turning argv into a validated Command. Pure (no I/O, no environment): a bad command line becomes a
// UsageError whose message says what was wrong and what to type instead.
import { parseArgs } from "node:util";
import type { AttributeName, LayoutName, ProtName } from "./convert.js";
import { parseHexBytes, parseNumber, parseSmallNumber } from "./numbers.js";

export const HELP = `vfio-broker: talk to brokerd, the VFIO/PCI BAR mapping broker

Usage:
  vfio-broker devices                       list the devices you may open
  vfio-broker regions <dev>                 list a device's regions and their cookies
  vfio-broker map <dev> <region> [options]  map a region range and access it through the mmap
  vfio-broker exec <dev> <region> [options] -- PROGRAM [ARGS...]
                                            map a region range and run PROGRAM with its fd

Map options:
  --offset N          offset inside the region (page aligned; default 0)
  --length N          bytes to map (page aligned; default: the rest of the region)
  --attr uc|wc        memory attribute to ask for (default uc)
  --prot r|rw         protection (default rw)
  --layout legacy|compact   cookie layout of the device file (default compact)
  --allow-fallback    map UC if the host cannot give WC (the output says why)
  --write OFF=HEX     write hex bytes (memory order) at OFF in the mapping; repeatable
  --read OFF[:LEN]    hexdump LEN bytes (default 16) at OFF in the mapping; repeatable
                      (--write and --read run in the order given)
  --hold              keep the mapping until SIGINT/SIGTERM (exit 0) or a revocation (exit 3)

Exec options: --offset, --length, --attr, --prot, --layout, --allow-fallback as for map, and
  --on-revoke warn|SIG  when brokerd revokes the mapping or ends the session while PROGRAM runs:
                      warn on stderr (default), or also send SIG (TERM, INT, HUP, QUIT, KILL,
                      USR1, USR2) to PROGRAM. brokerd cannot take back PROGRAM's mmap.
  PROGRAM gets the backing fd as fd 3 and, in its environment, VFIO_BROKER_FD (3),
  VFIO_BROKER_MMAP_OFFSET (pass it to mmap), VFIO_BROKER_LENGTH, VFIO_BROKER_ATTR (effective: uc
  or wc), VFIO_BROKER_PROT (r or rw), VFIO_BROKER_DEVICE, VFIO_BROKER_REGION,
  VFIO_BROKER_REGION_OFFSET, VFIO_BROKER_BACKING. SIGINT, SIGTERM and SIGHUP are passed on to it;
  the mapping is released when it exits, and exec exits with its status (128+N if signal N
  killed it; 126: PROGRAM could not be run, 127: not found).

Global options:
  --json              print one JSON object (64-bit numbers as decimal strings)
  --socket PATH       brokerd's socket (default $VFIO_BROKER_SOCKET or /run/vfio-broker/broker.sock)
  --fd-socket PATH    the fd channel socket (default $VFIO_BROKER_FD_SOCKET, else fd.sock beside
                      the broker socket, else what brokerd says)
  -h, --help          this help

The session is a workload-protocol connection to the fd channel socket; with
VFIO_BROKER_TRANSPORT=grpc it is a gRPC session on the broker socket instead.

Regions: BAR2, bar2 or 2 (also ROM, CONFIG, VGA). Numbers: 4096, 0x1000, 4K, 1M, 1G (K = 1024).
Exit status: 0 ok, 1 broker or runtime error, 2 usage error, 3 the mapping was revoked (--hold);
exec: PROGRAM's status; 1 or 2 when nothing was mapped, 126 or 127 when PROGRAM could not run.
`;

const COMMANDS = "devices, regions <dev>, map <dev> <region> or exec <dev> <region> -- PROGRAM";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export interface GlobalOptions {
  json: boolean;
  socket: string | undefined;
  fdSocket: string | undefined;
}

export type MapOp =
  | { kind: "write"; offset: number; data: Buffer }
  | { kind: "read"; offset: number; length: number };

export type Command =
  | { cmd: "help" }
  | ({ cmd: "devices" } & GlobalOptions)
  | ({ cmd: "regions"; device: string; layout: LayoutName | undefined } & GlobalOptions)
  | ({
      cmd: "map";
      device: string;
      region: string;
      offset: bigint;
      length: bigint | undefined;
      attr: AttributeName;
      prot: ProtName;
      layout: LayoutName | undefined;
      allowFallback: boolean;
      ops: MapOp[];
      hold: boolean;
    } & GlobalOptions)
  | ({
      cmd: "exec";
      device: string;
      region: string;
      offset: bigint;
      length: bigint | undefined;
      attr: AttributeName;
      prot: ProtName;
      layout: LayoutName | undefined;
      allowFallback: boolean;
      /** The signal to send PROGRAM when the mapping is revoked; undefined: only warn. */
      onRevoke: NodeJS.Signals | undefined;
      program: string;
      args: string[];
    } & GlobalOptions);

const OPTIONS = {
  json: { type: "boolean" },
  socket: { type: "string" },
  "fd-socket": { type: "string" },
  help: { type: "boolean", short: "h" },
  offset: { type: "string" },
  length: { type: "string" },
  attr: { type: "string" },
  prot: { type: "string" },
  layout: { type: "string" },
  "allow-fallback": { type: "boolean" },
  write: { type: "string", multiple: true },
  read: { type: "string", multiple: true },
  hold: { type: "boolean" },
  "on-revoke": { type: "string" },
} as const;

const MAP_ONLY = ["offset", "length", "attr", "prot", "allow-fallback", "write", "read", "hold"] as const;
/** What exec does not take (it prints nothing on stdout: that is PROGRAM's). */
const NOT_EXEC = ["write", "read", "hold", "json"] as const;
/** The signals --on-revoke may send. */
const REVOKE_SIGNALS = ["TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2"] as const;

function usage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(e.message);
    throw e;
  }
}

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], opt: string, def: T): T;
function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  opt: string,
): T | undefined;
function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  opt: string,
  def?: T,
): T | undefined {
  if (value === undefined) return def;
  const v = value.toLowerCase();
  if ((allowed as readonly string[]).includes(v)) return v as T;
  throw new UsageError(`${opt} ${JSON.stringify(value)} is not valid; use ${allowed.join(" or ")}`);
}

/** "OFF=HEX" */
export function parseWriteSpec(spec: string): MapOp {
  const eq = spec.indexOf("=");
  if (eq < 0)
    throw new UsageError(`--write ${JSON.stringify(spec)} needs OFF=HEX, e.g. --write 0x10=deadbeef`);
  return usage(() => ({
    kind: "write" as const,
    offset: parseSmallNumber(spec.slice(0, eq), "--write offset"),
    data: parseHexBytes(spec.slice(eq + 1), "--write data"),
  }));
}

/** "OFF" or "OFF:LEN" (LEN defaults to 16). */
export function parseReadSpec(spec: string): MapOp {
  const colon = spec.indexOf(":");
  const off = colon < 0 ? spec : spec.slice(0, colon);
  return usage(() => {
    const length = colon < 0 ? 16 : parseSmallNumber(spec.slice(colon + 1), "--read length");
    if (length === 0) throw new RangeError(`--read ${spec} reads nothing; give a length of at least 1`);
    return { kind: "read" as const, offset: parseSmallNumber(off, "--read offset"), length };
  });
}

function parseArgsError(e: unknown): UsageError {
  const err = e as Error & { code?: string };
  const m = err.message;
  if (err.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const opt = /'([^']+)'/.exec(m)?.[1] ?? m;
    return new UsageError(`unknown option ${opt}`);
  }
  if (err.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    const opt = /'(--?[^' ]+)/.exec(m)?.[1] ?? "an option";
    if (/ambiguous/.test(m))
      return new UsageError(`${opt} needs a value; to pass one starting with "-", write ${opt}=VALUE`);
    return new UsageError(`${opt} ${/argument missing/.test(m) ? "needs a value" : "does not take a value"}`);
  }
  return new UsageError(m);
}

type Parsed = ReturnType<typeof tokenize>;

/** The range and mapping options map and exec share. */
function rangeOptions(v: Parsed["values"]) {
  const offset = v.offset === undefined ? 0n : usage(() => parseNumber(v.offset!, "--offset"));
  const length = v.length === undefined ? undefined : usage(() => parseNumber(v.length!, "--length"));
  if (length === 0n) throw new UsageError("--length 0 maps nothing; give a positive, page-aligned length");
  const prot = oneOf<ProtName | "ro">(v.prot, ["r", "ro", "rw"], "--prot", "rw");
  return {
    offset,
    length,
    attr: oneOf<AttributeName>(v.attr, ["uc", "wc"], "--attr", "uc"),
    prot: prot === "ro" ? "r" : prot,
    layout: oneOf<LayoutName>(v.layout, ["legacy", "compact"], "--layout"),
    allowFallback: v["allow-fallback"] ?? false,
  } as const;
}

/** "warn" (undefined) or one of REVOKE_SIGNALS, with or without "SIG". */
function parseOnRevoke(value: string | undefined): NodeJS.Signals | undefined {
  if (value === undefined || value.toLowerCase() === "warn") return undefined;
  const name = value.toUpperCase().replace(/^SIG/, "");
  if ((REVOKE_SIGNALS as readonly string[]).includes(name)) return `SIG${name}` as NodeJS.Signals;
  throw new UsageError(
    `--on-revoke ${JSON.stringify(value)} is not valid; use warn or one of ${REVOKE_SIGNALS.join(", ")}`,
  );
}

/** exec <dev> <region> [options] -- PROGRAM [ARGS...] */
function parseExec({ values: v, tokens }: Parsed, global: GlobalOptions): Command {
  const stray = NOT_EXEC.find((o) => v[o] !== undefined);
  if (stray)
    throw new UsageError(
      `--${stray} does not apply to exec (PROGRAM gets the fd and stdout); use it with map`,
    );
  const end = tokens.findIndex((t) => t.kind === "option-terminator");
  const before = tokens.filter((t, i) => t.kind === "positional" && (end < 0 || i < end));
  const after = end < 0 ? [] : tokens.filter((t, i) => t.kind === "positional" && i > end);
  const example = "e.g. vfio-broker exec sim0 BAR2 --attr wc --length 8K -- ./my-program";
  if (before.length !== 3) throw new UsageError(`exec needs a device and a region before "--", ${example}`);
  if (after.length === 0) throw new UsageError(`exec needs "--" and a program after it, ${example}`);
  const [program, ...args] = after.map((t) => (t.kind === "positional" ? t.value : ""));
  if (program === "") throw new UsageError("exec: the program name is empty");
  return {
    cmd: "exec",
    device: before[1]!.kind === "positional" ? before[1]!.value : "",
    region: before[2]!.kind === "positional" ? before[2]!.value : "",
    ...rangeOptions(v),
    onRevoke: parseOnRevoke(v["on-revoke"]),
    program: program!,
    args,
    ...global,
  };
}

function tokenize(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      options: OPTIONS,
      allowPositionals: true,
      strict: true,
      tokens: true,
    });
  } catch (e) {
    throw parseArgsError(e);
  }
}

/** argv without "node cli.js" -> a validated Command, or a UsageError. */
export function parseCli(argv: readonly string[]): Command {
  const parsed = tokenize(argv);
  const { values: v, positionals, tokens } = parsed;
  if (v.help || positionals[0] === "help") return { cmd: "help" };
  const global: GlobalOptions = { json: v.json ?? false, socket: v.socket, fdSocket: v["fd-socket"] };
  if (global.socket === "") throw new UsageError("--socket needs a path");
  const [cmd, ...rest] = positionals;
  if (cmd === undefined) throw new UsageError(`no command given; use ${COMMANDS}`);
  if (cmd === "exec") return parseExec(parsed, global);
  if (v["on-revoke"] !== undefined) throw new UsageError("--on-revoke only applies to the exec command");
  if (cmd !== "map") {
    const stray = MAP_ONLY.find((o) => v[o] !== undefined);
    if (stray && (cmd === "devices" || cmd === "regions"))
      throw new UsageError(`--${stray} only applies to the map command`);
  }
  switch (cmd) {
    case "devices":
      if (rest.length > 0)
        throw new UsageError(`devices takes no arguments, got ${JSON.stringify(rest.join(" "))}`);
      if (v.layout !== undefined)
        throw new UsageError("--layout only applies to the regions and map commands");
      return { cmd: "devices", ...global };
    case "regions": {
      if (rest.length !== 1)
        throw new UsageError("regions needs exactly one device id, e.g. vfio-broker regions sim0");
      const layout = oneOf<LayoutName>(v.layout, ["legacy", "compact"], "--layout");
      return { cmd: "regions", device: rest[0]!, layout, ...global };
    }
    case "map": {
      if (rest.length !== 2)
        throw new UsageError("map needs a device and a region, e.g. vfio-broker map sim0 BAR2 --length 4K");
      const range = rangeOptions(v);
      const ops: MapOp[] = [];
      for (const t of tokens) {
        if (t.kind !== "option" || t.value === undefined) continue;
        if (t.name === "write") ops.push(parseWriteSpec(t.value));
        if (t.name === "read") ops.push(parseReadSpec(t.value));
      }
      if (range.prot === "r" && ops.some((o) => o.kind === "write"))
        throw new UsageError("--write needs a writable mapping; drop --prot r (or use --prot rw)");
      return {
        cmd: "map",
        device: rest[0]!,
        region: rest[1]!,
        ...range,
        ops,
        hold: v.hold ?? false,
        ...global,
      };
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}; use ${COMMANDS}`);
  }
}

/** Every op must fall inside the `length`-byte mapping; a UsageError names the first that does not. */
export function checkOps(ops: readonly MapOp[], length: bigint): void {
  for (const op of ops) {
    const n = op.kind === "write" ? op.data.length : op.length;
    if (BigInt(op.offset) + BigInt(n) > length) {
      const flag = op.kind === "write" ? "--write" : "--read";
      throw new UsageError(
        `${flag} at 0x${op.offset.toString(16)} (${n} bytes) is outside the ${length}-byte mapping; offsets are relative to the mapping start`,
      );
    }
  }
}
