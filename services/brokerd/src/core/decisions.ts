// Decisions: the policy's "allow" answers remembered per session, so that a session's every call
// (and every grant of the same region, attribute and prot) does not run the policy's funnel again.
// An answer is kept only for the Policy object it was made under: policies are frozen once parsed
// and a reload installs a new object (core/context.ts PolicyInForce), so the first call after a
// reload decides afresh; nothing else goes into an answer (the session's identity is fixed; device
// health, quotas, holds and revocation are checked on every call by their own code). Denials are
// never remembered: each is decided, published and thrown as before. Pure: no I/O, no events.
import type { Session } from "../identity/session.js";
import type { Policy, Rule } from "../policy/index.js";

interface Remembered {
  /** The policy's identity check passed for the session. */
  allowed: boolean;
  /** The rule each mapping request (`region attribute prot` of a device) was allowed under. */
  rules: Map<string, Rule> | undefined;
}

/** At most this many mapping answers per session (one per device, region, attribute and prot). */
export const MAX_RULES_PER_SESSION = 64;

/**
 * What a session whose identity was allowed and that has no mapping answer yet is remembered as:
 * one frozen object for all of them (an idle session held 40 bytes of its own). Never mutated:
 * #of() gives a session its own object before anything else is remembered for it.
 */
const ALLOWED: Readonly<Remembered> = Object.freeze({ allowed: true, rules: undefined });

export class Decisions {
  #policy: Policy | undefined;
  #bySession = new WeakMap<Session, Remembered>();

  /** Makes p the policy answers are kept for (forgetting every answer when p is not the one of before). */
  #under(p: Policy): void {
    if (p !== this.#policy) {
      this.#policy = p;
      this.#bySession = new WeakMap();
    }
  }

  /** What is remembered for s under p, an object of s's own (never the shared ALLOWED). */
  #of(p: Policy, s: Session): Remembered {
    this.#under(p);
    let r = this.#bySession.get(s);
    if (!r || r === ALLOWED) {
      r = { allowed: r === ALLOWED, rules: undefined };
      this.#bySession.set(s, r);
    }
    return r;
  }

  /** p allowed s's identity before (authorizeIdentity). */
  identityAllowed(p: Policy, s: Session): boolean {
    return p === this.#policy && this.#bySession.get(s)?.allowed === true;
  }

  rememberIdentity(p: Policy, s: Session): void {
    this.#under(p);
    const r = this.#bySession.get(s);
    if (!r) this.#bySession.set(s, ALLOWED);
    else if (!r.allowed) r.allowed = true; // s's own object (ALLOWED is allowed already)
  }

  /** The rule p allowed this mapping request of s under, if it was asked before. */
  rule(p: Policy, s: Session, key: string): Rule | undefined {
    if (p !== this.#policy) return undefined;
    return this.#bySession.get(s)?.rules?.get(key);
  }

  rememberRule(p: Policy, s: Session, key: string, rule: Rule): void {
    const r = this.#of(p, s);
    r.rules ??= new Map();
    if (r.rules.size >= MAX_RULES_PER_SESSION) r.rules.clear();
    r.rules.set(key, rule);
  }
}
