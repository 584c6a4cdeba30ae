// The core in process: the policy's answers remembered per session (core/decisions.ts) are never
// those of a policy that was replaced. A reload between two identical grants changes the answer
// (allowed, then denied; denied, then allowed), and the rule a grant is recorded under is the
// reloaded policy's, not the one remembered from before the reload.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  identityOf,
  map,
  openCore,
  openSession,
  PAGE,
  policy,
  reasonOf,
  stopCore,
  testScope,
} from "./support.js";

const { proc, dir } = testScope(after);

const rule = (name: string, attributes: string) =>
  `  - name: ${name}\n    match: { uids: [1000] }\n    devices: ["sim*"]\n    regions: [BAR0, BAR2]\n` +
  `    attributes: [${attributes}]\n    prot: [r, rw]\n`;
const only = (name: string, attributes: string) => policy(`version: 1\nrules:\n${rule(name, attributes)}`);

test("a reload between two identical grants changes the answer: allowed, then denied, then allowed again", async () => {
  const c = openCore(`${dir()}/state`, only("wc-and-uc", "UC, WC"));
  const { broker } = c;
  const s = openSession(broker, identityOf(proc().pid, 1000));
  const df = broker.openDevice(s, "simA", "compact");
  const first = map(broker, s, df.id, { attribute: "WC", deliver: true });
  assert.equal(first.mapping.rule, "wc-and-uc");
  broker.releaseMapping(s, df.id, first.mapping.cookie);
  // The same grant again is allowed (from what was remembered), then the policy takes WC away.
  broker.releaseMapping(s, df.id, map(broker, s, df.id, { attribute: "WC", deliver: true }).mapping.cookie);
  broker.setPolicy(only("uc-only", "UC"));
  assert.equal(
    reasonOf(() => map(broker, s, df.id, { attribute: "WC", deliver: true })),
    "policy:attribute",
  );
  // A denial is not remembered: the next reload gives WC back at once.
  broker.setPolicy(only("wc-again", "WC"));
  const again = map(broker, s, df.id, { attribute: "WC", deliver: true });
  assert.equal(again.mapping.rule, "wc-again");
  await stopCore(c);
});

test("a grant after a reload is recorded under the new policy's rule, not the one remembered before it", async () => {
  const c = openCore(`${dir()}/state`, only("before", "UC, WC"));
  const { broker } = c;
  const s = openSession(broker, identityOf(proc().pid, 1000));
  const df = broker.openDevice(s, "simA", "compact");
  const a = map(broker, s, df.id, { attribute: "UC", deliver: true });
  const b = map(broker, s, df.id, { attribute: "UC", offset: PAGE, deliver: true });
  assert.deepEqual([a.mapping.rule, b.mapping.rule], ["before", "before"]);
  // The same permissions under another rule name: the answer's rule is the new policy's.
  broker.setPolicy(only("after", "UC, WC"));
  const d = map(broker, s, df.id, { attribute: "UC", offset: 2n * PAGE, deliver: true });
  assert.equal(d.mapping.rule, "after");
  await stopCore(c);
});

// Here the reload's revocation ends the session before the remembered answer could be asked; the
// call is refused either way, as it was before answers were remembered.
test("an identity the reloaded policy no longer names is refused at its next call", async () => {
  const c = openCore(`${dir()}/state`, only("u1000", "UC, WC"));
  const { broker } = c;
  const s = openSession(broker, identityOf(proc().pid, 1000));
  broker.authorize(s);
  broker.authorize(s); // allowed, and remembered for this policy
  broker.setPolicy(policy(`version: 1\nrules:\n${rule("u1000", "UC, WC").replace("[1000]", "[1001]")}`));
  assert.notEqual(
    reasonOf(() => broker.authorize(s)),
    "",
  );
  await stopCore(c);
});
