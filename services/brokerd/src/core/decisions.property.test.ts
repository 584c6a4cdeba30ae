// Decisions against a model: whatever sessions and policies do in whatever order, each session
// sees only its own remembered answers, and only under the policy they were made under. Sessions
// that are only identity-allowed share one frozen object (core/decisions.ts): a rule remembered for
// one of them must never show for another.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Session } from "../identity/session.js";
import type { Policy, Rule } from "../policy/index.js";
import { Decisions, MAX_RULES_PER_SESSION } from "./decisions.js";

const SESSIONS = 4;
const POLICIES = 2;
const KEYS = ["d0 BAR0 WC rw", "d0 BAR2 UC r", "d1 BAR2 WC rw"];

const op = fc.oneof(
  fc.record({ kind: fc.constant("identity" as const), s: fc.nat(SESSIONS - 1), p: fc.nat(POLICIES - 1) }),
  fc.record({
    kind: fc.constant("rule" as const),
    s: fc.nat(SESSIONS - 1),
    p: fc.nat(POLICIES - 1),
    key: fc.constantFrom(...KEYS),
    rule: fc.nat(9),
  }),
);

test("property: each session's answers are its own and its policy's (model)", () => {
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const sessions = Array.from({ length: SESSIONS }, (_, i) => ({ i }) as unknown as Session);
      const policies = Array.from({ length: POLICIES }, (_, i) => ({ i }) as unknown as Policy);
      const rules = Array.from({ length: 10 }, (_, i) => ({ name: `r${i}` }) as unknown as Rule);
      const d = new Decisions();
      // The model: the policy answers are kept for, and per session allowed + rules.
      let current = -1;
      let model = new Map<number, { allowed: boolean; rules: Map<string, number> }>();
      const mine = (s: number) => {
        let m = model.get(s);
        if (!m) {
          m = { allowed: false, rules: new Map() };
          model.set(s, m);
        }
        return m;
      };
      const under = (p: number) => {
        if (p !== current) {
          current = p;
          model = new Map();
        }
      };
      for (const o of ops) {
        if (o.kind === "identity") {
          d.rememberIdentity(policies[o.p]!, sessions[o.s]!);
          under(o.p);
          mine(o.s).allowed = true;
        } else {
          d.rememberRule(policies[o.p]!, sessions[o.s]!, o.key, rules[o.rule]!);
          under(o.p);
          const m = mine(o.s);
          if (m.rules.size >= MAX_RULES_PER_SESSION) m.rules.clear();
          m.rules.set(o.key, o.rule);
        }
        for (let s = 0; s < SESSIONS; s++)
          for (let p = 0; p < POLICIES; p++) {
            const m = p === current ? model.get(s) : undefined;
            assert.equal(
              d.identityAllowed(policies[p]!, sessions[s]!),
              m?.allowed === true,
              `identity s${s} p${p}`,
            );
            for (const key of KEYS) {
              const want = m?.rules.get(key);
              assert.equal(
                d.rule(policies[p]!, sessions[s]!, key),
                want === undefined ? undefined : rules[want],
              );
            }
          }
      }
    }),
  );
});
