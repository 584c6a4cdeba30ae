// What an idle connection holds in the fd channel's transport: between frames it is one pending
// recv() and its callbacks, never a suspended async call chain (before, each connection held two
// suspended async functions and seven promises: thousands of idle workload sessions held them all).
// Counted exactly: two heap snapshots of this process (garbage collected first) before and after
// connections that each had one frame served and then went quiet. In-process: a real Broker for
// the quotas, real AF_UNIX sockets, a protocol that answers nothing.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { writeHeapSnapshot } from "node:v8";
import { Broker } from "../broker.js";
import { SimBackend } from "../devices/sim.js";
import { loadPolicyFile } from "../policy/index.js";
import { FdConnections } from "../sessions/fd-connections.js";
import { type FdProtocol, FdTransport } from "./transport.js";

/** Under the policy's default of 64 fd-channel connections per identity. */
const CONNECTIONS = 48;

/** Live objects of this process by "type:name" (a heap snapshot collects garbage first). */
function liveObjects(dir: string, tag: string): Map<string, number> {
  const file = writeHeapSnapshot(join(dir, `${tag}.heapsnapshot`));
  const s = JSON.parse(readFileSync(file, "utf8")) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  rmSync(file);
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const [ti, ni] = [fields.indexOf("type"), fields.indexOf("name")];
  const out = new Map<string, number>();
  for (let i = 0; i < s.nodes.length; i += fields.length) {
    const k = `${types[s.nodes[i + ti]!]}:${s.strings[s.nodes[i + ni]!]}`;
    out.set(k, (out.get(k) ?? 0) + 1);
  }
  return out;
}

test("an idle connection holds no suspended async function and at most two promises", async () => {
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
    const per = (k: string) => ((after.get(k) ?? 0) - (before.get(k) ?? 0)) / CONNECTIONS;
    assert.ok(
      per("object:Generator") < 0.25,
      `suspended async functions per idle connection: ${per("object:Generator")}`,
    );
    assert.ok(per("object:Promise") <= 2.25, `promises per idle connection: ${per("object:Promise")}`);
    assert.ok(per("object:Timeout") < 0.25, `timers per idle lease connection: ${per("object:Timeout")}`);
  } finally {
    for (const s of clients) s.destroy();
    transport.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
