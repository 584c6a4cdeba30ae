// Attacker agent on the fd channel. Modes:
//   close-mid-reply SOCKET WORKERS MS: each worker loops: connect, send an FdRequest, close at once
//     (before brokerd's reply), so brokerd's send meets EPIPE / ECONNRESET.
//   bad-frames SOCKET: one of each malformed request (fds pushed, 2 GiB prefix, oversize frame,
//     junk protobuf, half a prefix then EOF) and records what brokerd answered to each.
// Prints {sent, ...} when done.
import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { closeFd, FdSocket, memfdCreate } from "@vfio-broker/native";
import { FdReplySchema, FdRequestSchema, FdStatus } from "@vfio-broker/proto";

const [mode, socket, workersArg = "20", msArg = "3000"] = process.argv.slice(2);

function frame(ticket: string): Buffer {
  const body = toBinary(FdRequestSchema, create(FdRequestSchema, { ticket }));
  const b = Buffer.alloc(4 + body.length);
  b.writeUInt32BE(body.length, 0);
  Buffer.from(body).copy(b, 4);
  return b;
}

async function closeMidReply(): Promise<void> {
  const end = Date.now() + Number(msArg);
  let sent = 0;
  let errors = 0;
  await Promise.all(
    Array.from({ length: Number(workersArg) }, async () => {
      while (Date.now() < end) {
        await new Promise<void>((resolve) => {
          const c = connect(socket!);
          c.on("error", () => {
            errors++;
            resolve();
          });
          c.on("connect", () => {
            c.write(frame(randomBytes(16).toString("hex")), () => {
              sent++;
              // Gone before the reply: brokerd's send meets a closed peer.
              c.destroy();
              resolve();
            });
          });
        });
      }
    }),
  );
  process.stdout.write(`${JSON.stringify({ sent, errors })}\n`);
}

/** Sends raw bytes (optionally fds), returns the status name brokerd replied with, or "closed". */
async function probe(bytes: Buffer, fds: number[] = [], halfClose = false): Promise<string> {
  const s = await FdSocket.connect(socket!);
  try {
    await s.send(bytes.subarray(4), fds).catch(() => {});
    if (halfClose) return "sent";
    const m = await s.recv({ maxBytes: 4096, maxFds: 4 }).catch(() => null);
    if (!m) return "closed";
    for (const fd of m.fds) closeFd(fd);
    const status = FdStatus[fromBinary(FdReplySchema, m.data).status] ?? "?";
    // Still open? A second request must get a second reply.
    const again = await s
      .send(bytes.subarray(4))
      .then(() => s.recv({ maxBytes: 4096, maxFds: 4 }))
      .catch(() => null);
    return `${status}${again === null ? "+closed" : "+open"}`;
  } finally {
    s.close();
  }
}

async function rawProbe(bytes: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const c = connect(socket!);
    let got = Buffer.alloc(0);
    c.on("data", (d) => {
      got = Buffer.concat([got, d]);
    });
    c.on("error", () => {});
    c.on("close", () => {
      if (got.length < 4) return resolve("closed");
      const status = FdStatus[fromBinary(FdReplySchema, got.subarray(4, 4 + got.readUInt32BE(0))).status];
      resolve(`${status}+closed`);
    });
    c.on("connect", () => c.write(bytes));
  });
}

async function badFrames(): Promise<void> {
  const memfd = memfdCreate("pushed", 4096);
  const out: Record<string, string> = {};
  // FdSocket.send frames data itself: pass the body only (probe strips our prefix).
  out.fdsPushed = await probe(frame("00"), [memfd, memfd]);
  closeFd(memfd);
  out.hugePrefix = await rawProbe(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]));
  const big = Buffer.alloc(4 + 4096, 0x41);
  big.writeUInt32BE(4096, 0);
  out.oversizeFrame = await rawProbe(big);
  out.junkProtobuf = await probe(Buffer.from([0, 0, 0, 3, 0xff, 0xff, 0xff]));
  out.halfPrefixThenEof = await new Promise<string>((resolve) => {
    const c = connect(socket!);
    c.on("error", () => resolve("error"));
    c.on("connect", () => c.end(Buffer.from([0, 0])));
    c.on("close", () => resolve("closed"));
    c.on("data", () => {});
  });
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

if (mode === "close-mid-reply") await closeMidReply();
else if (mode === "bad-frames") await badFrames();
else throw new Error(`unknown mode ${mode}`);
process.exit(0);
