// What an idle connection holds in the fd channel's transport: between frames it is one pending
// receive() whose receiver is the connection itself, never a suspended async call chain or a
// promise (once each connection held two suspended async functions and seven promises, then a
// promise and its callbacks), and it waits in the thread's one epoll set, not a Poller of its own.
// Counted exactly: two heap snapshots of this process (garbage collected first) before and after
// connections that each had one frame served and then went quiet. In-process: a real Broker for
// the quotas, real AF_UNIX sockets, a protocol that answers nothing.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Broker } from "../broker.js";
import { liveObjects, perItem } from "../core-tests/live-objects.js";
import { SimBackend } from "../devices/sim.js";
import { loadPolicyFile } from "../policy/index.js";
import { FdConnections } from "../sessions/fd-connections.js";
import { type FdProtocol, FdTransport } from "./transport.js";

/** Under the policy's default of 64 fd-channel connections per identity. */
const CONNECTIONS = 48;

test("an idle connection holds no suspended async function, promise or poller", async () => {
  const dir = mkdtempSync(join(tmpdir(), "fd-idle-"));
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
  let served = 0;
  const protocol: FdProtocol = {
    maxRequestBytes: 64,
    badFrame: () => new Uint8Array(0),
    busy: () => new Uint8Array(0),
    serve: async (c) => {
      c.holdOpen(); // a session's lease: no idle timer either
      served++;
      return true;
    },
    stopped: () => false,
  };
  const transport = new FdTransport(new FdConnections(b), protocol, {
    path: join(dir, "fd.sock"),
    mode: 0o600,
  });
  const clients: Socket[] = [];
  const open = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const s = createConnection(join(dir, "fd.sock"));
      await new Promise((r) => s.once("connect", r));
      clients.push(s);
      s.write(Buffer.from([0, 0, 0, 1, 0x2a]));
    }
    while (served < clients.length) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 20)); // each asked for its next frame
  };
  try {
    await open(2); // what is made once (the poller's code, the shared buffers) is there before
    const before = liveObjects(dir, "before");
    await open(CONNECTIONS);
    const after = liveObjects(dir, "after");
    assert.equal(transport.connectionCount, CONNECTIONS + 2);
    const per = perItem(before, after, CONNECTIONS);
    assert.ok(
      per("object:Generator") < 0.25,
      `suspended async functions per idle connection: ${per("object:Generator")}`,
    );
    // Its pending read is a receive() with the connection as receiver: no promise (closures are
    // counted in workload-idle.test.ts, whose clients are another process's).
    assert.ok(per("object:Promise") < 0.25, `promises per idle connection: ${per("object:Promise")}`);
    // It waits in the thread's one epoll set (native readiness.ts), not in a Poller of its own.
    assert.ok(per("object:Poller") < 0.25, `pollers per idle connection: ${per("object:Poller")}`);
    assert.ok(per("object:Timeout") < 0.25, `timers per idle lease connection: ${per("object:Timeout")}`);
  } finally {
    for (const s of clients) s.destroy();
    transport.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
