// Faults: nothing a client sends or does can crash brokerd, leak an fd or leave a grant behind:
// garbage on either socket, fds pushed at the fd channel, half frames, clients killed between
// CreateMapping and the fd fetch, too many sessions; and a client survives brokerd being killed.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { connect } from "@vfio-broker/client";
import { closeFd, FdSocket, memfdCreate } from "@vfio-broker/native";
import { AdminService, createClient, FdReplySchema, FdStatus } from "@vfio-broker/proto";
import { type BrokerProcess, REPO, startBrokerd, until } from "../lib/brokerd.js";
import { brokerClient } from "./agents/raw.js";

const AGENTS = join(REPO, "test/dist/e2e/agents");

/** Writes raw bytes to a Unix socket and resolves when brokerd closes the connection. */
function sendRaw(path: string, bytes: Buffer, end = false): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = netConnect(path, () => {
      s.write(bytes);
      if (end) s.end();
    });
    s.on("data", () => {});
    s.on("error", () => {});
    s.on("close", () => resolve());
    setTimeout(() => reject(new Error("brokerd kept a garbage connection open for 10 s")), 10_000).unref();
  });
}

async function alive(b: BrokerProcess): Promise<void> {
  const c = brokerClient(b.socket);
  try {
    assert.equal((await c.listDevices({})).devices.length, 2);
  } finally {
    c.close();
  }
}

describe("faults", () => {
  let b: BrokerProcess;
  let baseline = 0;
  before(async () => {
    // No reserve: the one tenant here (root) may take the whole cap (docs/security.md, fair shares).
    b = await startBrokerd({ args: ["--max-sessions", "4", "--tenant-reserve", "0"] });
    await alive(b);
    await new Promise((r) => setTimeout(r, 200));
    baseline = b.fdCount();
  });
  after(async () => {
    await b?.stop();
  });
  const noLeak = (what: string) =>
    until(`${what}: brokerd fd count back to ${baseline}`, () => b.fdCount() <= baseline, 5000);

  it("garbage on the gRPC socket: the connection is dropped, brokerd serves on", async () => {
    await sendRaw(b.socket, Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await sendRaw(b.socket, Buffer.alloc(4096, 0xff));
    await alive(b);
    await noLeak("gRPC garbage");
  });

  it("fd channel: fds pushed at brokerd, half frames, oversized frames and junk are all dropped", async () => {
    // A client that sends brokerd an fd: brokerd accepts none, closes what arrived, answers
    // BAD_REQUEST (as fdchannel.proto says) and closes the connection.
    const memfd = memfdCreate("pushed-at-brokerd", 4096);
    const s = await FdSocket.connect(b.fdSocket);
    await s.send(Buffer.from([0x0a, 0x02, 0x30, 0x30]), [memfd, memfd, memfd]);
    const bad = await s.recv();
    assert.ok(bad, "a BAD_REQUEST reply");
    assert.equal(bad.fds.length, 0);
    assert.equal(fromBinary(FdReplySchema, bad.data).status, FdStatus.BAD_REQUEST);
    assert.equal(await s.recv().catch(() => null), null, "then brokerd closed the connection");
    s.close();
    closeFd(memfd);
    // Half a length prefix, then hang up.
    await sendRaw(b.fdSocket, Buffer.from([0, 0]), true);
    // A 2 GiB frame announced.
    await sendRaw(b.fdSocket, Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]));
    // A well-framed message that is not an FdRequest gets BAD_REQUEST and no fd.
    const junk = await FdSocket.connect(b.fdSocket);
    await junk.send(Buffer.from([0xff, 0xff, 0xff]));
    const reply = await junk.recv();
    assert.ok(reply);
    assert.equal(reply.fds.length, 0);
    junk.close();
    await alive(b);
    await noLeak("fd channel abuse");
  });

  it("a client killed between CreateMapping and the fd fetch leaves no grant and no fd", async () => {
    const proc = spawn(process.execPath, [join(AGENTS, "holder.js"), b.socket, "2", "0", "1048576", "WC"], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const info = await new Promise<{ sessionId: string }>((resolve, reject) => {
      proc.stdout!.on("data", (d: Buffer) => resolve(JSON.parse(d.toString().split("\n")[0]!)));
      proc.once("exit", (c) => reject(new Error(`holder exited ${c}`)));
    });
    proc.kill("SIGKILL");
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      await until("the killed session to be gone", async () => {
        const s = await admin.listSessions({});
        return !s.sessions.some((x) => x.sessionId === info.sessionId);
      });
      assert.equal((await admin.listMappings({})).mappings.length, 0);
    } finally {
      admin.close();
    }
    await noLeak("killed before fetch");
  });

  it("--max-sessions is enforced; a freed slot can be used again", async () => {
    const held = [
      brokerClient(b.socket),
      brokerClient(b.socket),
      brokerClient(b.socket),
      brokerClient(b.socket),
    ];
    try {
      for (const c of held) await c.hello({});
      const extra = brokerClient(b.socket);
      await assert.rejects(
        extra.hello({}, { timeoutMs: 3000 }),
        /RESOURCE_EXHAUSTED: tenant of uid 0 holds 4 of its 4 sessions: brokerd's 4 are shared by 1 active tenant\b/,
      );
      extra.close();
      held.pop()!.close();
      await until("a slot to be free", async () => {
        const c = brokerClient(b.socket);
        try {
          await c.hello({}, { timeoutMs: 1000 });
          return true;
        } catch {
          return false;
        } finally {
          c.close();
        }
      });
    } finally {
      for (const c of held) c.close();
    }
    await noLeak("session limit");
  });

  it("brokerd killed with SIGKILL: the client loses its lease and unmaps; a restarted brokerd serves again", async () => {
    const own = await startBrokerd();
    try {
      const client = await connect({ socket: own.socket, clientName: "fault" });
      const df = await client.open("sim0");
      const m = await df.map("BAR2", { length: 4096n, attr: "wc" });
      m.write32(0, 0xfeedface);
      const lost = new Promise((resolve) => client.on("leaseLost", resolve));
      own.proc.kill("SIGKILL");
      await lost;
      assert.equal(m.revoked || m.released, true, "the mapping was unmapped when the lease was lost");
      assert.throws(() => m.read32(0));
      await client.close();
      // A new brokerd on the same runtime dir replaces the stale sockets.
      const again = await startBrokerd({ dir: own.dir });
      try {
        const c2 = await connect({ socket: again.socket });
        assert.equal((await c2.devices()).length, 2);
        await c2.close();
      } finally {
        await again.stop();
      }
    } finally {
      await own.stop();
    }
  });
});
