// The answer brokerd gives a connection it refuses without running HTTP/2 on it (an identity in
// reconnect backoff): prebuilt frames, written without parsing anything the client sends beyond
// frame headers. A fresh client connection's first call is always stream 1, so the answer is a
// server SETTINGS frame, then, once the client's first HEADERS frame has arrived, a trailers-only
// gRPC response on stream 1 (grpc-status and grpc-message: what the client library shows) and
// GOAWAY(ENHANCE_YOUR_CALM) carrying the same text. Pure byte building and scanning: no sockets.

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const FRAME_HEADERS = 0x1;
const FRAME_SETTINGS = 0x4;
const FRAME_GOAWAY = 0x7;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
export const ENHANCE_YOUR_CALM = 0xb;

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** An HPACK integer (RFC 7541 5.1) with a prefix of `bits` bits under the high bits `high`. */
export function hpackInt(v: number, bits: number, high: number): Buffer {
  const max = (1 << bits) - 1;
  if (v < max) return Buffer.from([high | v]);
  const out = [high | max];
  let rest = v - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** A literal header field without indexing, new name, no Huffman coding (RFC 7541 6.2.2). */
function literal(name: string, value: string): Buffer {
  const n = Buffer.from(name, "latin1");
  const v = Buffer.from(value, "latin1");
  return Buffer.concat([Buffer.from([0x00]), hpackInt(n.length, 7, 0), n, hpackInt(v.length, 7, 0), v]);
}

/** grpc-message's percent-encoding (gRPC's HTTP/2 protocol spec): printable ASCII but '%' as is. */
export function grpcMessage(text: string): string {
  let out = "";
  for (const b of Buffer.from(text, "utf8"))
    out +=
      b >= 0x20 && b <= 0x7e && b !== 0x25
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  return out;
}

/** The server's first frame: an empty SETTINGS (HTTP/2's defaults). */
export const SERVER_PREFACE = frame(FRAME_SETTINGS, 0, 0, Buffer.alloc(0));

/**
 * Stream 1's trailers-only response with a gRPC status (numeric code) and message, then GOAWAY
 * (last stream 1, ENHANCE_YOUR_CALM, the message as debug data) for anything else.
 */
export function refusalFrames(grpcStatus: number, message: string): Buffer {
  const block = Buffer.concat([
    Buffer.from([0x88]), // :status 200 (static table entry 8)
    literal("content-type", "application/grpc"),
    literal("grpc-status", String(grpcStatus)),
    literal("grpc-message", grpcMessage(message)),
  ]);
  const goaway = Buffer.alloc(8);
  goaway.writeUInt32BE(1, 0);
  goaway.writeUInt32BE(ENHANCE_YOUR_CALM, 4);
  return Buffer.concat([
    frame(FRAME_HEADERS, END_STREAM | END_HEADERS, 1, block),
    frame(FRAME_GOAWAY, 0, 0, Buffer.concat([goaway, Buffer.from(message, "utf8")])),
  ]);
}

/**
 * Walks what a client sent so far, by frame headers only: "headers" once a HEADERS frame has
 * begun (stream 1 is open, its answer may go), "more" while it could still come, "invalid" if the
 * bytes are not an HTTP/2 client preface followed by frames.
 */
export function scanClientFrames(bytes: Buffer): "headers" | "more" | "invalid" {
  const head = bytes.subarray(0, PREFACE.length);
  if (!PREFACE.subarray(0, head.length).equals(head)) return "invalid";
  let at = PREFACE.length;
  while (bytes.length - at >= 9) {
    if (bytes[at + 3] === FRAME_HEADERS) return "headers";
    at += 9 + bytes.readUIntBE(at, 3);
  }
  return "more";
}
