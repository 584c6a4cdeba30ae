// Load: 64 clients in parallel (4 processes x 16 connections, each its own session), each doing
// 50 map/write/verify/release cycles: no live cookie handed out twice, every byte written is read
// back, and brokerd holds no more fds afterwards than before.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type BrokerProcess, NOBODY, REPO, run, startBrokerd, until } from "../lib/brokerd.js";
import { brokerClient } from "./agents/raw.js";

const AGENTS = join(REPO, "test/dist/e2e/agents");

describe("load", () => {
  let b: BrokerProcess;
  before(async () => {
    b = await startBrokerd();
  });
  after(async () => {
    await b?.stop();
  });

  it("64 clients x 50 map/release cycles: no duplicate cookie, no fd leak", {
    timeout: 240_000,
  }, async () => {
    const warm = brokerClient(b.socket);
    await warm.listDevices({});
    warm.close();
    await new Promise((r) => setTimeout(r, 200));
    const baseline = b.fdCount();
    const results = await Promise.all(
      [0, 1, 2, 3].map((tag) =>
        run(process.execPath, [join(AGENTS, "churn.js"), b.socket, "16", "50", String(tag)], {
          uid: tag % 2 ? NOBODY : undefined,
          timeoutMs: 200_000,
        }),
      ),
    );
    for (const r of results) {
      assert.equal(r.code, 0, `${r.stderr}${r.stdout}`);
      const s = JSON.parse(r.stdout);
      assert.equal(s.duplicates, 0);
      assert.equal(s.mapped, 16 * 50 * 2);
      assert.equal(s.verified, 16 * 50);
      assert.deepEqual(s.errors, []);
    }
    await until(`brokerd fd count back to ${baseline}`, () => b.fdCount() <= baseline, 10_000);
  });
});
