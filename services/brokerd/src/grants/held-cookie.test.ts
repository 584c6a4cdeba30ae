// A revoked mapping's cookie stays taken while its hold lives: a new mapping in the same device
// file never gets it, so a release of that cookie can only end the hold (before this, one release
// of the new mapping ended the hold and freed pages its holder could still map: one page could then
// be granted UC and WC). In process, on the sim backend.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { PAGE_SIZE } from "@vfio-broker/native";
import { Broker } from "../broker.js";
import { identityOf } from "../core-tests/support.js";
import { SimBackend } from "../devices/sim.js";
import type { PeerIdentity } from "../identity/peer.js";
import { parsePolicy } from "../policy/index.js";

const policyFile = new URL("../../../../deploy/policy/sim-local.yaml", import.meta.url);

/** This test process, as a kernel-verified peer (a pidfd of its own). */
function identity(): PeerIdentity {
  return identityOf(process.pid, process.getuid!(), { gid: process.getgid!() });
}

test("a held cookie is not given to a new mapping, and its release ends only the hold", async () => {
  const broker = new Broker({
    backends: [new SimBackend()],
    policy: parsePolicy(readFileSync(policyFile, "utf8"), "sim-local.yaml"),
    pageSize: BigInt(PAGE_SIZE),
    ticketTtlMs: 10_000,
    maxSessions: 64,
    maxAccessBytes: 4096,
    fdSocketPath: "/nonexistent/fd.sock",
  });
  try {
    const s = broker.openSession(identity());
    const df = broker.openDevice(s, "sim0", "compact");
    const peer = { uid: s.identity.uid, pid: s.identity.pid };
    const map = (offset: bigint, attribute: "UC" | "WC") =>
      broker.createMapping(s, {
        deviceFileId: df.id,
        regionIndex: 2,
        offset,
        length: 4096n,
        attribute,
        prot: "rw",
        allowFallback: false,
      });
    const first = map(0n, "WC");
    assert.equal(broker.redeemTicket(first.ticket, peer).ok, true);
    const held = first.mapping.cookie;
    assert.equal(broker.revokeMapping(df.id, held, "test").mappingsHeld, 1);
    for (let i = 1n; i <= 8n; i++) assert.notEqual(map(i * 8192n, "WC").mapping.cookie, held);
    assert.equal(df.mappings.size, 8);
    assert.throws(() => df.resolve(held, 1), /revoked/);
    // The held cookie's release ends the hold, and nothing else.
    broker.releaseMapping(s, df.id, held);
    assert.equal(broker.holds.size, 0);
    assert.equal(df.mappings.size, 8);
    // Its pages are free now: UC on them is granted, and the cookie may be used again.
    const again = map(0n, "UC");
    assert.equal(again.mapping.effectiveAttribute, "UC");
  } finally {
    await broker.close();
  }
});
