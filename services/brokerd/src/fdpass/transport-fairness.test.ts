// The fd channel's transport shares brokerd among busy connections: a client whose frames are all
// there already (pipelined) is served a few at a time, and another connection's frame that came
// meanwhile is served before the rest of them (without the turn, microtasks served all of the first
// client's frames before any other connection's). In-process: a real Broker for the quotas, real
// AF_UNIX sockets, a protocol that only records what it was asked.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Broker } from "../broker.js";
import { SimBackend } from "../devices/sim.js";
import { loadPolicyFile } from "../policy/index.js";
import { FdConnections } from "../sessions/fd-connections.js";
import { type FdProtocol, FdTransport } from "./transport.js";

const frame = (tag: string) => {
  const b = Buffer.alloc(4 + tag.length);
  b.writeUInt32BE(tag.length, 0);
  b.write(tag, 4);
  return b;
};

test("a pipelined flood on one connection does not hold back another connection's frame", async () => {
  const dir = mkdtempSync(join(tmpdir(), "fd-fairness-"));
  const policy = join(dir, "policy.yaml");
  writeFileSync(
    policy,
    "version: 1\nrules:\n  - name: local\n    match: { any: true }\n" +
      '    devices: ["sim*"]\n    regions: ["*"]\n    attributes: [UC]\n    prot: [r]\n',
  );
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
  const served: string[] = [];
  const protocol: FdProtocol = {
    maxRequestBytes: 64,
    badFrame: () => new Uint8Array(0),
    busy: () => new Uint8Array(0),
    serve: async (_c, f) => {
      served.push(Buffer.from(f).toString());
      return true;
    },
    stopped: () => false,
  };
  const transport = new FdTransport(new FdConnections(b), protocol, {
    path: join(dir, "fd.sock"),
    mode: 0o600,
  });
  const clients: Socket[] = [];
  const until = async (n: number) => {
    while (served.length < n) await new Promise((r) => setTimeout(r, 5));
  };
  try {
    for (const tag of ["A", "B"]) {
      const s = createConnection(join(dir, "fd.sock"));
      await new Promise((r) => s.once("connect", r));
      clients.push(s);
      s.write(frame(`${tag}-hello`));
      await until(clients.length);
    }
    const [a, v] = clients as [Socket, Socket];
    const FLOOD = 40;
    // In one turn of this process's loop: A's frames all at once, then B's one.
    a.write(Buffer.concat(Array.from({ length: FLOOD }, (_, i) => frame(`A-${i}`))));
    v.write(frame("B-1"));
    await until(2 + FLOOD + 1);
    const at = served.indexOf("B-1");
    assert.ok(at >= 2, `served: ${served.join(" ")}`);
    assert.ok(
      at < 2 + FLOOD,
      `B's frame waited for all ${FLOOD} of A's pipelined frames: ${served.slice(2).join(" ")}`,
    );
  } finally {
    for (const s of clients) s.destroy();
    transport.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
