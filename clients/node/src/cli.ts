#!/usr/bin/env node
// cli.ts: the `vfio-broker` command: devices, regions <dev>, map <dev> <region>, exec <dev> <region>
// -- PROGRAM (see args.ts for the command line, format.ts for the output, exec.ts for exec). It uses
// the client library exactly as a user would and only adds printing, exit statuses and signals.
// Exit: 0 ok, 1 broker/runtime error, 2 usage, 3 the held mapping was revoked; exec: PROGRAM's
// status (126/127: it could not run). Errors are one line on stderr: "vfio-broker: <what>; <what to do>".
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type Command, checkOps, HELP, parseCli } from "./args.js";
import type { BrokerClient } from "./client.js";
import { connect } from "./connect.js";
import { DEFAULT_SOCKET } from "./connect-options.js";
import { execProgram } from "./exec.js";
import { describeError, devicesTable, formatKeyValues, regionsTable, toJson } from "./format.js";
import { hexdump } from "./hexdump.js";
import type { Mapping } from "./mapping.js";
import { formatSize, hex } from "./numbers.js";

type MapCommand = Extract<Command, { cmd: "map" }>;

interface Io {
  out(line: string): void;
  err(line: string): void;
}

const stdio: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

async function devices(
  client: BrokerClient,
  cmd: Extract<Command, { cmd: "devices" }>,
  io: Io,
): Promise<number> {
  const list = await client.devices();
  if (cmd.json) io.out(toJson({ devices: list }));
  else for (const l of devicesTable(list)) io.out(l);
  return 0;
}

async function regions(
  client: BrokerClient,
  cmd: Extract<Command, { cmd: "regions" }>,
  io: Io,
): Promise<number> {
  const df = await client.open(cmd.device, { layout: cmd.layout });
  try {
    if (cmd.json)
      io.out(toJson({ deviceId: df.deviceId, deviceFileId: df.id, layout: df.layout, regions: df.regions }));
    else for (const l of regionsTable(df.regions)) io.out(l);
  } finally {
    await df.close();
  }
  return 0;
}

/** Runs --write/--read in order through the mmap; returns what to report. */
function runOps(m: Mapping, cmd: MapCommand) {
  const writes: { offset: number; length: number; data: string }[] = [];
  const reads: { offset: number; length: number; data: Buffer }[] = [];
  for (const op of cmd.ops) {
    if (op.kind === "write") {
      m.writeBytes(op.offset, op.data);
      writes.push({ offset: op.offset, length: op.data.length, data: op.data.toString("hex") });
    } else {
      reads.push({ offset: op.offset, length: op.length, data: m.readBytes(op.offset, op.length) });
    }
  }
  return { writes, reads };
}

function waitForEnd(client: BrokerClient, m: Mapping, cmd: MapCommand, io: Io): Promise<number> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => {}, 1 << 30);
    const done = (code: number) => {
      clearInterval(keepAlive);
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      resolve(code);
    };
    const onSignal = (sig: NodeJS.Signals) => {
      if (cmd.json) io.out(toJson({ released: true, signal: sig }));
      else io.out(`released (${sig})`);
      done(0);
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    client.on("revocation", (ev) => {
      if (!m.revoked) return;
      if (cmd.json)
        io.out(
          toJson({
            revoked: { reason: ev.reason, message: ev.message, cookie: ev.cookie, deviceId: ev.deviceId },
          }),
        );
      else io.out(`revoked: ${ev.reason}`);
      if (!cmd.json && ev.message) io.err(`vfio-broker: ${ev.message}`);
      done(3);
    });
    // brokerd restarted (upgrade, crash) and the client took its session back: still holding.
    client.on("resumed", (ev) => {
      if (cmd.json) io.out(toJson({ resumed: { sessionId: ev.sessionId, downtimeMs: ev.downtimeMs } }));
      else io.out(`resumed after a brokerd restart (${ev.downtimeMs} ms); still holding`);
    });
    client.on("leaseLost", (ev) => {
      io.err(
        `vfio-broker: lost the lease to brokerd (${ev.reason}); the mapping is gone, run the command again once brokerd is back`,
      );
      done(1);
    });
  });
}

async function map(client: BrokerClient, cmd: MapCommand, io: Io): Promise<number> {
  const df = await client.open(cmd.device, { layout: cmd.layout });
  const region = df.region(cmd.region);
  if (cmd.length === undefined && cmd.offset >= region.size)
    throw new RangeError(
      `--offset ${hex(cmd.offset)} is at or past the end of ${region.name} (${formatSize(region.size)})`,
    );
  const length = cmd.length ?? region.size - cmd.offset;
  checkOps(cmd.ops, length);
  const m = await df.map(region, {
    offset: cmd.offset,
    length,
    attr: cmd.attr,
    prot: cmd.prot,
    allowFallback: cmd.allowFallback,
  });
  const { writes, reads } = runOps(m, cmd);
  if (cmd.json) {
    io.out(
      toJson({
        deviceId: df.deviceId,
        deviceFileId: df.id,
        layout: df.layout,
        cookie: m.cookie,
        region: { index: m.regionIndex, name: m.regionName },
        offset: m.regionOffset,
        length: m.length,
        requestedAttribute: m.requestedAttribute,
        effectiveAttribute: m.effectiveAttribute,
        fallbackReason: m.fallbackReason,
        backing: m.backing,
        prot: m.prot,
        writes,
        reads: reads.map((r) => ({ offset: r.offset, length: r.length, hex: r.data.toString("hex") })),
        holding: cmd.hold,
      }),
    );
  } else {
    const kv: [string, string][] = [
      ["device file", `${df.id} (${df.deviceId}, ${df.layout} layout)`],
      ["cookie", hex(m.cookie)],
      ["region", `${m.regionName} (index ${m.regionIndex})`],
      ["offset", hex(m.regionOffset)],
      ["length", `${m.length} (${formatSize(BigInt(m.length))})`],
      ["attribute", `requested ${m.requestedAttribute}, effective ${m.effectiveAttribute}`],
      ["fallback", m.fallbackReason || "-"],
      ["backing", `${m.backing} (prot ${m.prot})`],
    ];
    for (const w of writes) kv.push(["wrote", `${w.length} byte(s) at ${hex(w.offset)}`]);
    for (const l of formatKeyValues(kv)) io.out(l);
    for (const r of reads) for (const l of hexdump(r.data, r.offset)) io.out(l);
  }
  if (!cmd.hold) return 0;
  if (!cmd.json) io.out("holding the mapping; SIGINT or SIGTERM releases it");
  return waitForEnd(client, m, cmd, io);
}

/** Runs one command line; returns the exit status. Never throws. */
export async function main(argv: readonly string[], io: Io = stdio): Promise<number> {
  let socket = process.env.VFIO_BROKER_SOCKET || DEFAULT_SOCKET;
  let client: BrokerClient | undefined;
  try {
    const cmd = parseCli(argv);
    if (cmd.cmd === "help") {
      io.out(HELP.trimEnd());
      return 0;
    }
    socket = cmd.socket ?? socket;
    client = await connect({
      socket,
      fdSocket: cmd.fdSocket,
      clientName: `vfio-broker-cli ${cmd.cmd}`,
      lease: cmd.cmd === "map" || cmd.cmd === "exec",
    });
    switch (cmd.cmd) {
      case "devices":
        return await devices(client, cmd, io);
      case "regions":
        return await regions(client, cmd, io);
      case "map":
        return await map(client, cmd, io);
      case "exec":
        return await execProgram(client, cmd, io);
    }
    return 0;
  } catch (e) {
    if (process.env.VFIO_BROKER_DEBUG) io.err(e instanceof Error ? (e.stack ?? e.message) : String(e));
    const f = describeError(e, { socket });
    io.err(f.message);
    return f.exitCode;
  } finally {
    await client?.close().catch(() => {});
  }
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const code = await main(process.argv.slice(2));
  process.exit(code);
}
