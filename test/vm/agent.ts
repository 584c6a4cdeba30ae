// VM suite client agent: runs inside the guest as uid 65534 (setpriv, no capabilities) and drives
// brokerd through its sockets exactly as a foreign client would (raw gRPC + fd channel + mmap), so
// the suite does not depend on the client library's evolving surface. It runs a plan (JSON, argv[3])
// of steps and prints one "AGENT {json}" line per step; "pause" waits for a line on stdin, so the
// suite can inspect the kernel (PAT, fds) while mappings are live, or kill the agent there.
// Usage: node agent.js <broker.sock> <deviceId> '<plan json>'
import { createInterface } from "node:readline";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { grpcCodeName } from "@vfio-broker/client";
import { closeFd, FdSocket, mmap, type Mapping as NativeMapping } from "@vfio-broker/native";
import {
  Attribute,
  BackingKind,
  BrokerService,
  createClient,
  DeviceMode,
  FdReplySchema,
  FdRequestSchema,
  FdStatus,
  Layout,
  Prot,
} from "@vfio-broker/proto";

export type Step =
  | {
      op: "map";
      name: string;
      region: number;
      offset: number;
      length: number;
      attr: "UC" | "WC";
      fallback?: boolean;
      /** Write `text` at this offset inside the mapping. */
      write?: { at: number; text: string };
      /** Read `length` bytes at this offset inside the mapping and report them as text. */
      read?: { at: number; length: number };
      /** 32-bit register accesses through the mapping, in order: writes then reads. */
      regs?: { write32?: [number, number][]; read32?: number[] };
      /** The mapping is expected to be refused; report the gRPC code. */
      expectError?: boolean;
      /** Another device than the agent's default. */
      device?: string;
    }
  | { op: "release"; name: string }
  | { op: "readRegion"; region: number; offset: number; length: number }
  | { op: "writeRegion"; region: number; offset: number; text: string }
  | { op: "pause"; tag: string };

function out(v: Record<string, unknown>): void {
  process.stdout.write(`AGENT ${JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x))}\n`);
}

const text = (b: Uint8Array) => Buffer.from(b).toString("latin1").replace(/\0.*$/s, "");

async function main(): Promise<void> {
  const [socket, deviceId, planJson] = process.argv.slice(2);
  if (!socket || !deviceId || !planJson)
    throw new Error("usage: agent.js <broker.sock> <deviceId> '<plan json>'");
  const plan = JSON.parse(planJson) as Step[];
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const c = createClient(BrokerService, `unix:${socket}`);
  const hello = await c.hello({ clientName: "vm-agent" });
  const fdSocketPath = hello.capabilities!.fdSocketPath;
  const files = new Map<string, Awaited<ReturnType<typeof c.openDevice>>>();
  const open = async (id: string) => {
    let f = files.get(id);
    if (!f) {
      f = await c.openDevice({ deviceId: id, layout: Layout.LEGACY });
      files.set(id, f);
    }
    return f;
  };
  const df = await open(deviceId);
  const regionCookie = new Map(df.regions.map((r) => [r.region!.index, r.cookie]));
  out({
    op: "hello",
    uid: process.getuid?.(),
    pid: process.pid,
    deviceFileId: df.deviceFileId,
    backings: hello.capabilities!.backings.map((b) => BackingKind[b]),
    attributes: hello.capabilities!.attributes.map((a) => Attribute[a]),
    deviceModes: hello.capabilities!.deviceModes.map((m) => DeviceMode[m]),
  });
  const live = new Map<string, { cookie: bigint; mem: NativeMapping; dfId: bigint }>();

  for (const s of plan) {
    if (s.op === "pause") {
      out({ op: "pause", tag: s.tag });
      await lines.next();
      continue;
    }
    if (s.op === "release") {
      const m = live.get(s.name);
      if (!m) throw new Error(`no live mapping ${s.name}`);
      m.mem.unmap();
      await c.releaseMapping({ deviceFileId: m.dfId, cookie: m.cookie });
      live.delete(s.name);
      out({ op: "release", name: s.name, ok: true });
      continue;
    }
    if (s.op === "readRegion") {
      try {
        const r = await c.readRegion({
          deviceFileId: df.deviceFileId,
          offset: regionCookie.get(s.region)! + BigInt(s.offset),
          length: s.length,
        });
        out({ op: "readRegion", ok: true, hex: Buffer.from(r.data).toString("hex"), text: text(r.data) });
      } catch (e) {
        out({
          op: "readRegion",
          ok: false,
          code: grpcCodeName((e as { code: number }).code),
          message: (e as Error).message,
        });
      }
      continue;
    }
    if (s.op === "writeRegion") {
      try {
        const data = Buffer.from(`${s.text}\0`, "latin1");
        const r = await c.writeRegion({
          deviceFileId: df.deviceFileId,
          offset: regionCookie.get(s.region)! + BigInt(s.offset),
          data,
        });
        out({ op: "writeRegion", ok: true, written: r.written });
      } catch (e) {
        out({
          op: "writeRegion",
          ok: false,
          code: grpcCodeName((e as { code: number }).code),
          message: (e as Error).message,
        });
      }
      continue;
    }
    // map
    const mdf = await open(s.device ?? deviceId);
    let created: Awaited<ReturnType<typeof c.createMapping>>;
    try {
      created = await c.createMapping({
        deviceFileId: mdf.deviceFileId,
        regionIndex: s.region,
        offset: BigInt(s.offset),
        length: BigInt(s.length),
        attribute: s.attr === "WC" ? Attribute.WC : Attribute.UC,
        prot: Prot.READ_WRITE,
        allowFallback: !!s.fallback,
      });
    } catch (e) {
      out({
        op: "map",
        name: s.name,
        ok: false,
        code: grpcCodeName((e as { code: number }).code),
        message: (e as Error).message,
        expected: !!s.expectError,
      });
      continue;
    }
    const m = created.mapping!;
    const sock = await FdSocket.connect(fdSocketPath);
    let fd: number;
    let mmapOffset: bigint;
    try {
      await sock.send(toBinary(FdRequestSchema, create(FdRequestSchema, { ticket: created.ticket })));
      const msg = await sock.recv({ maxBytes: 4096, maxFds: 4 });
      if (!msg) throw new Error("fd channel closed without a reply");
      const reply = fromBinary(FdReplySchema, msg.data);
      if (reply.status !== FdStatus.OK || msg.fds.length !== 1) {
        for (const f of msg.fds) closeFd(f);
        throw new Error(`fd channel: ${FdStatus[reply.status]} ${reply.message}`);
      }
      fd = msg.fds[0]!;
      mmapOffset = reply.mmapOffset;
    } finally {
      sock.close();
    }
    let mem: NativeMapping;
    try {
      mem = mmap(fd, mmapOffset, s.length, "rw");
    } finally {
      closeFd(fd);
    }
    live.set(s.name, { cookie: m.cookie, mem, dfId: mdf.deviceFileId });
    const bytes = new Uint8Array(mem.buffer);
    // Uint32Array, not DataView: V8's DataView reads and writes byte by byte, which a register that
    // only accepts 32-bit accesses (edu, many real devices) ignores. A typed array does one access.
    const words = new Uint32Array(mem.buffer);
    for (const [at, v] of s.regs?.write32 ?? []) words[at / 4] = v;
    const regs = (s.regs?.read32 ?? []).map((at) => `0x${words[at / 4]!.toString(16).padStart(8, "0")}`);
    if (s.write) bytes.set(Buffer.from(`${s.write.text}\0`, "latin1"), s.write.at);
    const read = s.read ? text(bytes.subarray(s.read.at, s.read.at + s.read.length)) : undefined;
    out({
      op: "map",
      name: s.name,
      ok: true,
      backing: BackingKind[m.backing],
      effective: Attribute[m.effectiveAttribute],
      fallbackReason: m.fallbackReason,
      deviceFileId: mdf.deviceFileId,
      cookie: m.cookie,
      mmapOffset,
      read,
      regs,
      wroteBack: s.write ? text(bytes.subarray(s.write.at, s.write.at + s.write.text.length + 1)) : undefined,
    });
  }
  for (const m of live.values()) m.mem.unmap();
  c.close?.();
  out({ op: "done" });
  process.exit(0);
}

main().catch((e) => {
  out({ op: "crash", message: (e as Error).stack ?? String(e) });
  process.exit(1);
});
