// Hostile: references on one cookie are not free. A client that repeats the same CreateMapping to
// pile up references (each one a ticket, a journal line and a state record) is stopped by its
// mappings quota, with a message naming it; releasing one reference makes room again; another
// identity keeps mapping the same pages meanwhile.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { codeOf, rawSession } from "../e2e/agents/raw.js";
import { type BrokerProcess, CLI, NOBODY, run, startBrokerd } from "../lib/brokerd.js";

describe("hostile: cookie references", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd({
      policyText: `version: 1
rules:
  - name: hoarder
    match: { uids: [0] }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
    limits: { mappings: 4 }
  - name: everyone-else
    match: { any: true }
    devices: ["sim*"]
    regions: ["*"]
    attributes: [UC, WC]
    prot: [r, rw]
    readWrite: true
`,
    });
  });
  after(() => b.stop());

  it("each reference counts against the mappings quota", async () => {
    const { rpc, df, page } = await rawSession(b.socket, "hoarder");
    const req = page(0);
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await rpc.createMapping(req));
    assert.equal(held.at(-1)!.mapping!.refs, 4);
    const more = await rpc.createMapping(req).catch((e: Error) => e);
    assert.equal(codeOf(more), "RESOURCE_EXHAUSTED");
    assert.match((more as Error).message, /mappings/);
    // Someone else maps the very same pages WC meanwhile.
    const other = await run(
      process.execPath,
      [CLI, "map", "sim0", "BAR2", "--length", "4096", "--attr", "wc", "--json", "--socket", b.socket],
      { uid: NOBODY },
    );
    assert.equal(other.code, 0, other.stderr);
    // One release, one reference more.
    await rpc.releaseMapping({ deviceFileId: df.deviceFileId, cookie: held[0]!.mapping!.cookie });
    const again = await rpc.createMapping(req);
    assert.equal(again.mapping!.refs, 4);
    rpc.close();
  });
});
