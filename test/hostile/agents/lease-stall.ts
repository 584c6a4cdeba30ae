// Attacker agent: opens a Lease on a raw HTTP/2 connection, then sets its receive window to 0 and
// sends keepalives as fast as it can: every one asks brokerd for an ack it can never deliver.
// Prints {keepalives, closedByBroker, ms} once brokerd drops the connection or MS pass.

import http2 from "node:http2";
import { connect as netConnect } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { HelloRequestSchema, LeaseRequestSchema } from "@vfio-broker/proto";

const [socket, msArg = "10000"] = process.argv.slice(2);
const SERVICE = "/vfiobroker.v1.BrokerService";
const frame = (body: Uint8Array) => {
  const b = Buffer.alloc(5 + body.length);
  b.writeUInt32BE(body.length, 1);
  Buffer.from(body).copy(b, 5);
  return b;
};
const headers = (method: string) => ({
  ":method": "POST",
  ":path": `${SERVICE}/${method}`,
  "content-type": "application/grpc",
  te: "trailers",
});

const session = http2.connect("http://localhost", { createConnection: () => netConnect(socket!) });
session.on("error", () => {});
let closedByBroker = false;
session.on("close", () => {
  closedByBroker = true;
});
await new Promise<void>((resolve, reject) => {
  const req = session.request(headers("Hello"));
  req.on("data", () => {});
  req.on("end", () => resolve());
  req.on("error", reject);
  req.end(frame(toBinary(HelloRequestSchema, create(HelloRequestSchema, { clientName: "lease-stall" }))));
});
const lease = session.request(headers("Lease"));
lease.on("error", () => {});
await new Promise<void>((resolve) => lease.once("response", () => resolve()));
session.settings({ initialWindowSize: 0 });
lease.pause();
const t0 = Date.now();
let keepalives = 0;
while (!closedByBroker && Date.now() - t0 < Number(msArg)) {
  for (let i = 0; i < 50; i++) {
    const k = create(LeaseRequestSchema, {
      kind: { case: "keepalive", value: { sequence: BigInt(++keepalives) } },
    });
    lease.write(frame(toBinary(LeaseRequestSchema, k)));
  }
  await new Promise((r) => setTimeout(r, 5));
}
process.stdout.write(`${JSON.stringify({ keepalives, closedByBroker, ms: Date.now() - t0 })}\n`);
session.destroy();
process.exit(0);
