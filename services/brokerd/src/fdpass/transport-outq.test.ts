// The transport asks the kernel what a peer has not read (SIOCOUTQ) once per exchange that adds
// fds (room()), not again before every frame: counted without the kernel the figures are never
// below the truth, so while they allow a read the kernel would too. The bound stays: a client that
// reads none of its replies is served UNREAD_FDS_PER_CONNECTION of them, then not read from until
// it reads. In-process: a real Broker for the quotas, real AF_UNIX sockets, a protocol that answers
// each frame with one fd.
import assert from "node:assert/strict";
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { FdSocket } from "@vfio-broker/native";
import { Broker } from "../broker.js";
import { SimBackend } from "../devices/sim.js";
import { loadPolicyFile } from "../policy/index.js";
import { FdConnections } from "../sessions/fd-connections.js";
import { type FdProtocol, FdTransport, UNREAD_FDS_PER_CONNECTION } from "./transport.js";

const frame = (tag: string) => {
  const b = Buffer.alloc(4 + tag.length);
  b.writeUInt32BE(tag.length, 0);
  b.write(tag, 4);
  return b;
};

async function withTransport(body: (path: string, served: () => number) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "fd-outq-"));
  const policy = join(dir, "policy.yaml");
  writeFileSync(policy, "version: 1\nrules: []\n");
  chmodSync(policy, 0o644);
  const b = new Broker({
    backends: [new SimBackend([])],
    policy: loadPolicyFile(policy),
    pageSize: 4096n,
    ticketTtlMs: 10_000,
    maxSessions: 8,
    maxAccessBytes: 4096,
    fdSocketPath: join(dir, "fd.sock"),
  });
  const devNull = openSync("/dev/null", "r");
  let served = 0;
  const protocol: FdProtocol = {
    maxRequestBytes: 64,
    badFrame: () => new Uint8Array(0),
    busy: () => new Uint8Array(0),
    serve: async (c, f) => {
      if (!(await c.room(1))) return false;
      served++;
      await c.reply(f, [devNull]);
      return true;
    },
    stopped: () => false,
  };
  const transport = new FdTransport(new FdConnections(b), protocol, {
    path: join(dir, "fd.sock"),
    mode: 0o600,
  });
  try {
    await body(join(dir, "fd.sock"), () => served);
  } finally {
    transport.close();
    await b.close();
    closeSync(devNull);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Counts SIOCOUTQ asks (FdSocket.unreadBytes) while body runs. */
async function countingOutq(body: () => Promise<void>): Promise<number> {
  const real = FdSocket.prototype.unreadBytes;
  let n = 0;
  FdSocket.prototype.unreadBytes = function (this: FdSocket) {
    n++;
    return real.call(this);
  };
  try {
    await body();
  } finally {
    FdSocket.prototype.unreadBytes = real;
  }
  return n;
}

const connect = async (path: string): Promise<Socket> => {
  const s = createConnection(path);
  await new Promise((r) => s.once("connect", r));
  return s;
};

const settle = async (ok: () => boolean) => {
  while (!ok()) await new Promise((r) => setTimeout(r, 5));
};

test("one SIOCOUTQ per exchange: a client that reads each reply before its next frame", async () => {
  await withTransport(async (path, served) => {
    const s = await connect(path);
    try {
      const EXCHANGES = 20;
      let replies = 0;
      s.on("data", (d) => {
        replies += d.length / 5; // each reply is a 1-byte frame: 4 + 1 bytes
      });
      const asks = await countingOutq(async () => {
        for (let i = 0; i < EXCHANGES; i++) {
          s.write(frame("x"));
          await settle(() => replies >= i + 1);
        }
      });
      assert.equal(served(), EXCHANGES);
      assert.ok(
        asks <= EXCHANGES + 2,
        `${asks} SIOCOUTQ asks for ${EXCHANGES} exchanges (one each, then the last read)`,
      );
    } finally {
      s.destroy();
    }
  });
});

test("a client that reads no reply is served UNREAD_FDS_PER_CONNECTION of them, then the rest once it reads", async () => {
  await withTransport(async (path, served) => {
    const s = await FdSocket.connect(path); // reads only when asked: every reply stays in the kernel
    try {
      const FRAMES = UNREAD_FDS_PER_CONNECTION + 8;
      for (let i = 0; i < FRAMES; i++) await s.send(frame("x").subarray(4));
      await settle(() => served() >= UNREAD_FDS_PER_CONNECTION);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(
        served(),
        UNREAD_FDS_PER_CONNECTION,
        "not read from while its replies hold a batch of fds",
      );
      for (let i = 0; i < FRAMES; i++) {
        const m = await s.recv({ maxFds: 1 });
        for (const fd of m?.fds ?? []) closeSync(fd);
      }
      assert.equal(served(), FRAMES);
    } finally {
      s.close();
    }
  });
});
