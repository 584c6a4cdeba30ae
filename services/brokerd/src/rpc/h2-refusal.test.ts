// The backoff answer is real HTTP/2: Node's own http2 client (nghttp2), given only these bytes,
// sees SETTINGS, a response on stream 1 with grpc-status 8 and the message, then GOAWAY
// ENHANCE_YOUR_CALM. And the frame-header scan finds the first HEADERS, however the bytes are split.
import assert from "node:assert/strict";
import { connect } from "node:http2";
import { createServer } from "node:net";
import { test } from "node:test";
import fc from "fast-check";
import {
  ENHANCE_YOUR_CALM,
  grpcMessage,
  hpackInt,
  PREFACE,
  refusalFrames,
  SERVER_PREFACE,
  scanClientFrames,
} from "./h2-refusal.js";

test("refusalFrames: Node's http2 client reads the status, the message and the GOAWAY", async () => {
  const message = `brokerd: uid 65534 may not connect for 8 s more: ${"x".repeat(300)} 100% é`;
  const server = createServer((s) => {
    s.write(SERVER_PREFACE);
    let seen = Buffer.alloc(0);
    let answered = false;
    s.on("data", (d: Buffer) => {
      if (answered) return;
      seen = Buffer.concat([seen, d]);
      if (scanClientFrames(seen) === "headers") {
        answered = true;
        s.end(refusalFrames(8, message));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const session = connect(`http://127.0.0.1:${port}`);
  const goaway = new Promise<[number, Buffer]>((r) =>
    session.once("goaway", (code, _last, data) => r([code, data])),
  );
  session.on("error", () => {});
  const req = session.request({ ":method": "POST", ":path": "/x.Y/Z", "content-type": "application/grpc" });
  req.end();
  const headers = await new Promise<Record<string, unknown>>((r) => req.once("response", (h) => r(h)));
  const [code, data] = await goaway;
  session.destroy();
  server.close();
  assert.equal(headers[":status"], 200);
  assert.equal(headers["grpc-status"], "8");
  assert.equal(decodeURIComponent(String(headers["grpc-message"])), message);
  assert.equal(code, ENHANCE_YOUR_CALM);
  assert.equal(data.toString("utf8"), message);
});

test("grpcMessage escapes '%' and everything outside printable ASCII", () => {
  assert.equal(grpcMessage("a%b\né"), "a%25b%0A%C3%A9");
  fc.assert(
    fc.property(fc.string({ unit: "grapheme" }), (s) => assert.equal(decodeURIComponent(grpcMessage(s)), s)),
  );
});

test("hpackInt: RFC 7541 C.1 examples", () => {
  assert.deepEqual([...hpackInt(10, 5, 0)], [10]);
  assert.deepEqual([...hpackInt(1337, 5, 0)], [31, 154, 10]);
  assert.deepEqual([...hpackInt(42, 8, 0)], [42]);
});

function frame(type: number, len: number): Buffer {
  const h = Buffer.alloc(9 + len);
  h.writeUIntBE(len, 0, 3);
  h[3] = type;
  return h;
}

test("scanClientFrames: HEADERS found after any frames, 'more' on any prefix, 'invalid' without the preface", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom(0, 2, 3, 4, 6, 8), fc.integer({ min: 0, max: 200 })), {
        maxLength: 8,
      }),
      (before) => {
        const bytes = Buffer.concat([PREFACE, ...before.map(([t, n]) => frame(t, n)), frame(1, 20)]);
        assert.equal(scanClientFrames(bytes), "headers");
        for (let cut = 0; cut < bytes.length - 20 - 9 + 4; cut += 7)
          assert.equal(scanClientFrames(bytes.subarray(0, cut)), "more");
      },
    ),
  );
  assert.equal(scanClientFrames(Buffer.from("GET / HTTP/1.1\r\n")), "invalid");
});
