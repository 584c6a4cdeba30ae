// Attacker agent: an HTTP/2 peer that stops reading. It opens a device file normally, then sets
// SETTINGS_INITIAL_WINDOW_SIZE=0 (brokerd may send no more response bytes on any stream) and
// pipelines ReadRegion calls as fast as it can for MS, never granting window. Each call asks for
// 4 KiB that brokerd must buffer if it accepts the call. Holds the connection until SIGTERM.
// Prints {sent, requestBytes, streamErrors, refusedStreams}.

import http2 from "node:http2";
import { connect as netConnect } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  HelloRequestSchema,
  OpenDeviceRequestSchema,
  OpenDeviceResponseSchema,
  ReadRegionRequestSchema,
} from "@vfio-broker/proto";

// Registered first thing: the test may signal as soon as the attack is in place.
// The interval keeps the event loop alive while the agent only holds what it took.
const stopped = new Promise<void>((resolve) => {
  const alive = setInterval(() => {}, 1000);
  process.once("SIGTERM", () => {
    clearInterval(alive);
    resolve();
  });
});
const [socket, msArg = "5000"] = process.argv.slice(2);
const SERVICE = "/vfiobroker.v1.BrokerService";

function grpcFrame(body: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + body.length);
  b.writeUInt32BE(body.length, 1);
  Buffer.from(body).copy(b, 5);
  return b;
}

const session = http2.connect("http://localhost", { createConnection: () => netConnect(socket!) });
session.on("error", () => {});

function unary(method: string, body: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = session.request({
      ":method": "POST",
      ":path": `${SERVICE}/${method}`,
      "content-type": "application/grpc",
      te: "trailers",
    });
    const chunks: Buffer[] = [];
    req.on("data", (d: Buffer) => chunks.push(d));
    req.on("end", () => {
      const all = Buffer.concat(chunks);
      resolve(all.subarray(5));
    });
    req.on("error", reject);
    req.end(grpcFrame(body));
  });
}

await unary("Hello", toBinary(HelloRequestSchema, create(HelloRequestSchema, { clientName: "h2-stall" })));
const opened = fromBinary(
  OpenDeviceResponseSchema,
  await unary(
    "OpenDevice",
    toBinary(OpenDeviceRequestSchema, create(OpenDeviceRequestSchema, { deviceId: "sim0" })),
  ),
);
const bar2 = opened.regions.find((r) => r.region?.index === 2)!;
const read = grpcFrame(
  toBinary(
    ReadRegionRequestSchema,
    create(ReadRegionRequestSchema, { deviceFileId: opened.deviceFileId, offset: bar2.cookie, length: 4096 }),
  ),
);
session.settings({ initialWindowSize: 0 });
await new Promise((r) => setTimeout(r, 100));

let sent = 0;
let accepted = 0;
let streamErrors = 0;
let refusedStreams = 0;
let open = 0;
const end = Date.now() + Number(msArg);
while (Date.now() < end) {
  // Node queues streams over the server's SETTINGS_MAX_CONCURRENT_STREAMS on our side; keep that
  // queue short (our own memory), and keep offering brokerd new calls as slots free up.
  for (let i = 0; i < 64 && open < 10_000; i++) {
    let req: http2.ClientHttp2Stream;
    try {
      req = session.request({
        ":method": "POST",
        ":path": `${SERVICE}/ReadRegion`,
        "content-type": "application/grpc",
        te: "trailers",
      });
    } catch {
      refusedStreams++;
      continue;
    }
    open++;
    req.on("response", () => {
      accepted++; // brokerd took the call (its headers need no window)
    });
    req.on("error", () => {
      streamErrors++;
    });
    req.on("close", () => {
      open--;
    });
    req.pause(); // never read
    req.end(read);
    sent++;
  }
  await new Promise((r) => setImmediate(r));
}
process.stdout.write(`${JSON.stringify({ phase: "holding", sent, accepted })}\n`);
await stopped;
process.stdout.write(
  `${JSON.stringify({ sent, accepted, requestBytes: sent * read.length, streamErrors, refusedStreams })}\n`,
);
session.destroy();
process.exit(0);
