// Tickets: one fd delivery per ticket, only to the process it was issued to, only before expiry.
// Every refusal must deliver no fd at all.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AdminService, createClient } from "@vfio-broker/proto";
import { type BrokerProcess, NOBODY, REPO, run, startBrokerd } from "../lib/brokerd.js";
import { present } from "./agents/raw.js";

const AGENTS = join(REPO, "test/dist/e2e/agents");

/** Starts a holder agent (as uid) and returns its first JSON line and the process. */
async function holder(
  b: BrokerProcess,
  uid?: number,
  args: string[] = [],
): Promise<{ info: Record<string, string>; proc: ChildProcess }> {
  const proc = spawn(process.execPath, [join(AGENTS, "holder.js"), b.socket, ...args], {
    stdio: ["pipe", "pipe", "inherit"],
    ...(uid !== undefined ? { uid, gid: uid } : {}),
  });
  const line = await new Promise<string>((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n")) resolve(out.split("\n")[0]!);
    });
    proc.once("exit", (c) => reject(new Error(`holder exited ${c}: ${out}`)));
  });
  const info = JSON.parse(line);
  assert.equal(info.ok, true, line);
  return { info, proc };
}

describe("tickets on the fd channel", () => {
  let b: BrokerProcess;
  const procs: ChildProcess[] = [];
  before(async () => {
    b = await startBrokerd({ args: ["--ticket-ttl-ms", "1500"] });
  });
  after(async () => {
    for (const p of procs) p.kill("SIGKILL");
    await b?.stop();
  });

  it("a ticket presented by another uid is refused (WRONG_PEER) and delivers no fd", async () => {
    const h = await holder(b);
    procs.push(h.proc);
    const r = await run(process.execPath, [join(AGENTS, "present.js"), b.fdSocket, h.info.ticket!], {
      uid: NOBODY,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).status, "WRONG_PEER");
    assert.equal(JSON.parse(r.stdout).fds, 0);
  });

  it("a ticket presented by another process of the same uid is refused (WRONG_PEER)", async () => {
    const h = await holder(b);
    procs.push(h.proc);
    // This test process is root, like the holder, but another pid.
    const r = await present(b.fdSocket, h.info.ticket!);
    assert.deepEqual(r, { status: "WRONG_PEER", fds: 0, message: r.message });
    assert.match(r.message, /issued to another process/);
  });

  it("the owner gets exactly one fd; a replay is refused (ALREADY_USED) with no fd", async () => {
    const h = await holder(b, NOBODY, ["2", "0", "4096", "WC", "fetch"]);
    procs.push(h.proc);
    assert.equal(h.info.wrote, true);
    // The holder used its ticket; replay it from here.
    const r = await present(b.fdSocket, h.info.ticket!);
    assert.equal(r.status, "ALREADY_USED");
    assert.equal(r.fds, 0);
  });

  it("an expired ticket is refused (EXPIRED) with no fd, and its mapping is released", async () => {
    const h = await holder(b);
    procs.push(h.proc);
    await new Promise((r) => setTimeout(r, 2200));
    const r = await present(b.fdSocket, h.info.ticket!);
    assert.equal(r.status, "EXPIRED");
    assert.equal(r.fds, 0);
    const admin = createClient(AdminService, `unix:${b.adminSocket}`);
    try {
      const live = await admin.listMappings({ sessionId: h.info.sessionId! });
      assert.equal(live.mappings.length, 0, "the undelivered mapping was released when its ticket expired");
    } finally {
      admin.close();
    }
  });

  it("unknown and malformed tickets are refused", async () => {
    assert.equal((await present(b.fdSocket, "0".repeat(32))).status, "UNKNOWN_TICKET");
    // Not even the shape of a ticket (32 lower-case hex digits): the request is bad, and says why.
    const bad = await present(b.fdSocket, "not a ticket");
    assert.equal(bad.status, "BAD_REQUEST");
    assert.match(bad.message, /^FdRequest\.ticket holds "n" at offset 0; it may hold lower-case hex digits/);
    assert.equal(bad.fds, 0);
  });
});
