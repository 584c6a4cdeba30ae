// The core in process, model-based (fast-check commands): random sequences of open session, open
// device, map, fetch, set attribute, release, close device, end session, revoke, drain, policy reload, restart
// (stop keeping grants, restore from the store), resume and process exit, run against a Broker on
// a real StateStore with the sim backend and child processes as clients. After every step:
//   - no page is booked with two attributes (live mappings and holds agree with each other, and
//     the AttributeMaps book exactly what they cover);
//   - no quota is exceeded, and every QuotaBook entry is what the live objects account for;
//   - no cookie is handed out while held (no hold shares its device file and cookie with a live
//     mapping or another hold);
//   - replay equals state (a StateModel replayed from the store's files is the live core's view);
// and after a restart the restored core holds what the stopped one held.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { Session } from "../identity/session.js";
import type { Policy } from "../policy/index.js";
import { StateStore } from "../state/store.js";
import {
  type Core,
  disconnect,
  identityOf,
  killAll,
  map,
  openCore,
  openSession,
  PAGE,
  Proc,
  policy,
  refusal,
  restartCore,
  rulesFor,
  stopKeepingGrants,
  tempDir,
  until,
} from "./support.js";
import {
  bookedPages,
  cookieClashes,
  expectedBookings,
  expectedQuotas,
  liveView,
  modelView,
  quotaKeysOf,
  quotaView,
} from "./views.js";

const RUNS = Number(process.env.CORE_PROPERTY_RUNS ?? 50);
const MAX_COMMANDS = 60;
const UIDS = [1000, 1001, 1002];
/** The same limits in every policy (a lowered quota is not taken back, so it could not be checked). */
const LIMITS = { sessions: 4, deviceFiles: 3, mappings: 6, pendingMappings: 3, bytes: 12n * PAGE };
const LIMITS_YAML = `{ sessions: 4, deviceFiles: 3, mappings: 6, pendingMappings: 3, bytes: ${12n * PAGE} }`;
const POLICIES: Policy[] = [
  policy(rulesFor(UIDS, LIMITS_YAML)),
  policy(rulesFor(UIDS, LIMITS_YAML).replaceAll("attributes: [UC, WC]", "attributes: [UC]")),
  policy(rulesFor(UIDS.slice(0, 2), LIMITS_YAML)),
  policy(rulesFor(UIDS, LIMITS_YAML).replaceAll('devices: ["sim*"]', "devices: [simA]")),
];

/** The system under test: one core (replaced at each restart) and the client processes. */
class Real {
  core: Core;
  policy = POLICIES[0]!;
  readonly procs: (Proc | undefined)[] = UIDS.map(() => undefined);
  readonly dead: Proc[] = [];
  /** Resume tokens of the sessions opened (a restored session has none of its own). */
  readonly tokens = new Map<string, string>();
  /** The last step did something (counted in the summary; else it found nothing to act on). */
  acted = false;
  /**
   * A core on dir with one session of each identity open, each with a device file (every sequence
   * starts with clients to act for; the commands open more).
   */
  constructor(readonly dir: string) {
    this.core = openCore(dir, this.policy);
    for (const [slot, uid] of UIDS.entries()) {
      const s = openSession(this.broker, identityOf(this.proc(slot).pid, uid));
      this.tokens.set(s.id, s.resumeToken);
      this.broker.openDevice(s, slot === 1 ? "simB" : "simA", "compact");
    }
  }
  get broker() {
    return this.core.broker;
  }
  /** Sessions a call can come from: alive and on a connection (not waiting to be resumed). */
  attached(): Session[] {
    return [...this.broker.sessions.values()].filter((s) => !s.detached);
  }
  proc(slot: number): Proc {
    this.procs[slot] ??= new Proc();
    return this.procs[slot]!;
  }
}

interface Model {
  steps: number;
}

const pick = <T>(xs: T[], n: number): T | undefined => (xs.length === 0 ? undefined : xs[n % xs.length]);

/** What the runs did (the summary line): calls answered, refused, and how. */
const tally = new Map<string, number>();
const count = (k: string) => tally.set(k, (tally.get(k) ?? 0) + 1);

/** Runs a core call; a refusal (BrokerError) is an answer, anything else a failure. */
function attempt(what: string, fn: () => void): void {
  try {
    fn();
    count(`${what}:ok`);
  } catch (e) {
    const reason = refusal(e);
    count(`${what}:${reason}`);
    assert.notEqual(reason, "store_failed", "a state write failed");
  }
}

function checkInvariants(r: Real): void {
  const b = r.broker;
  // 1. No page booked with two attributes: expectedBookings throws on a clash between live
  // objects; the AttributeMaps must book exactly their pages.
  assert.deepEqual(bookedPages(b), expectedBookings(b), "page bookings");
  // 2. Quotas: what the live objects account for, and within the limits.
  const keys = new Set([...quotaKeysOf(b), ...UIDS.map((u) => `uid:${u}`)]);
  const want = expectedQuotas(b, keys);
  for (const k of keys) {
    const u = b.quotas.usage(k);
    assert.deepEqual({ ...u }, want[k], `quota ${k}`);
    assert.ok(u.sessions <= LIMITS.sessions, `${k} sessions ${u.sessions}`);
    assert.ok(u.deviceFiles <= LIMITS.deviceFiles, `${k} device files ${u.deviceFiles}`);
    assert.ok(u.mappings <= LIMITS.mappings, `${k} mappings ${u.mappings}`);
    assert.ok(u.pendingMappings <= LIMITS.pendingMappings, `${k} pending ${u.pendingMappings}`);
    assert.ok(u.bytes <= LIMITS.bytes, `${k} bytes ${u.bytes}`);
  }
  assert.equal(b.quotas.size, [...keys].filter((k) => !isZero(want[k]!)).length, "no other quota key");
  // 3. No cookie handed out while held.
  assert.deepEqual(cookieClashes(b), [], "cookies");
  // 4. Replay equals state.
  assert.deepEqual(modelView(StateStore.replay(r.dir).model), liveView(b), "replay");
}

const isZero = (u: ReturnType<typeof expectedQuotas>[string]) =>
  u.sessions + u.deviceFiles + u.mappings + u.pendingMappings + u.fdConnections + u.unreadFds === 0 &&
  u.bytes === 0n;

type Step = fc.AsyncCommand<Model, Real>;

/** A command from a name, its arguments (for the failing sequence) and its effect. */
function cmd(name: string, args: unknown, run: (r: Real) => void | Promise<void>): Step {
  return {
    check: () => true,
    async run(m, r) {
      const before = [...tally.values()].reduce((x, y) => x + y, 0);
      await run(r);
      if ([...tally.values()].reduce((x, y) => x + y, 0) === before)
        count(`${name}:${r.acted ? "ok" : "none"}`);
      r.acted = false;
      m.steps++;
      checkInvariants(r);
    },
    toString: () => `${name}(${JSON.stringify(args, (_k, v) => (typeof v === "bigint" ? String(v) : v))})`,
  };
}

const n = fc.nat(1000);

const [
  openS,
  endS,
  openD,
  mapM,
  fetchM,
  releaseM,
  closeD,
  revokeM,
  drainD,
  reloadP,
  restart,
  resume,
  exit,
  setA,
] = [
  fc.record({ slot: fc.nat(UIDS.length - 1) }).map((a) =>
    cmd("openSession", a, (r) => {
      const p = r.proc(a.slot);
      attempt("openSession", () => {
        const s = openSession(r.broker, identityOf(p.pid, UIDS[a.slot]!));
        r.tokens.set(s.id, s.resumeToken);
      });
    }),
  ),
  fc.record({ s: n, how: fc.constantFrom("disconnect", "revokeSession") }).map((a) =>
    cmd("endSession", a, (r) => {
      const s = pick([...r.broker.sessions.values()], a.s);
      if (!s) return;
      if (a.how === "disconnect" && !s.detached) {
        disconnect(r.broker, s);
        r.acted = true;
      } else attempt("revokeSession", () => r.broker.revokeSession(s.id, "test"));
    }),
  ),
  fc
    .record({ s: n, device: fc.constantFrom("simA", "simB"), layout: fc.constantFrom("compact", "legacy") })
    .map((a) =>
      cmd("openDevice", a, (r) => {
        const s = pick(r.attached(), a.s);
        if (s)
          attempt("openDevice", () => r.broker.openDevice(s, a.device, a.layout as "compact" | "legacy"));
      }),
    ),
  fc
    .record({
      df: n,
      region: n,
      page: n,
      pages: fc.integer({ min: 1, max: 4 }),
      attribute: fc.constantFrom("UC", "WC"),
      prot: fc.constantFrom("r", "rw"),
      fallback: fc.boolean(),
      deliver: fc.boolean(),
    })
    .map((a) =>
      cmd("map", a, (r) => {
        const dfs = r.attached().flatMap((s) => [...s.deviceFiles.values()].map((df) => ({ s, df })));
        const at = pick(dfs, a.df);
        if (!at) return;
        const region = pick(
          at.df.device.regions.filter((x) => x.index <= 5),
          a.region,
        )!;
        const pages = region.size / PAGE;
        const first = BigInt(a.page) % pages;
        const length = BigInt(Math.min(a.pages, Number(pages - first))) * PAGE;
        attempt("map", () =>
          map(r.broker, at.s, at.df.id, {
            region: region.index,
            offset: first * PAGE,
            length,
            attribute: a.attribute as "UC" | "WC",
            prot: a.prot as "r" | "rw",
            allowFallback: a.fallback,
            deliver: a.deliver,
          }),
        );
      }),
    ),
  fc.record({ m: n }).map((a) =>
    cmd("fetchFd", a, (r) => {
      const ms = r
        .attached()
        .flatMap((s) =>
          [...s.deviceFiles.values()].flatMap((df) => [...df.mappings.values()].map((m) => ({ s, m }))),
        );
      const at = pick(
        ms.filter((x) => x.m.ticket !== ""),
        a.m,
      );
      if (!at) return;
      const d = r.broker.redeemTicket(at.m.ticket, { uid: at.s.identity.uid, pid: at.s.identity.pid });
      r.acted = true;
      assert.ok(d.ok || d.status === "internal", `redeem: ${d.ok ? "" : d.message}`);
    }),
  ),
  fc.record({ m: n }).map((a) =>
    cmd("release", a, (r) => {
      const live = r
        .attached()
        .flatMap((s) =>
          [...s.deviceFiles.values()].flatMap((df) =>
            [...df.mappings.keys()].map((c) => ({ s, df: df.id, c })),
          ),
        );
      const held = [...r.broker.holds.all()].flatMap((h) => {
        const s = r.broker.sessions.get(h.sessionId);
        return s && !s.detached ? [{ s, df: h.deviceFileId, c: h.cookie }] : [];
      });
      const at = pick([...live, ...held], a.m);
      if (at) attempt("release", () => r.broker.releaseMapping(at.s, at.df, at.c));
    }),
  ),
  fc.record({ df: n }).map((a) =>
    cmd("closeDevice", a, (r) => {
      const at = pick(
        r.attached().flatMap((s) => [...s.deviceFiles.keys()].map((id) => ({ s, id }))),
        a.df,
      );
      if (at) attempt("closeDevice", () => r.broker.closeDevice(at.s, at.id));
    }),
  ),
  fc.record({ m: n }).map((a) =>
    cmd("revokeMapping", a, (r) => {
      const ms = [...r.broker.sessions.values()].flatMap((s) =>
        [...s.deviceFiles.values()].flatMap((df) => [...df.mappings.keys()].map((c) => ({ df: df.id, c }))),
      );
      const at = pick(ms, a.m);
      if (at) attempt("revokeMapping", () => r.broker.revokeMapping(at.df, at.c, "test"));
    }),
  ),
  fc.record({ device: fc.constantFrom("simA", "simB") }).map((a) =>
    cmd("drain", a, (r) => {
      if (r.broker.healthOf(a.device) === "draining") r.broker.undrainDevice(a.device);
      else r.broker.drainDevice(a.device, "test");
      r.acted = true;
    }),
  ),
  fc.record({ policy: fc.nat(POLICIES.length - 1) }).map((a) =>
    cmd("reload", a, (r) => {
      r.policy = POLICIES[a.policy]!;
      r.acted = true;
      r.broker.setPolicy(r.policy);
    }),
  ),
  fc.constant(null).map(() =>
    cmd("restart", {}, (r) => {
      const b = r.broker;
      const before = { grants: liveView(b), quotas: quotaView(b, quotaKeysOf(b)), pages: bookedPages(b) };
      r.core = restartCore(r.core, r.policy);
      r.acted = true;
      const after = r.broker;
      assert.deepEqual(
        {
          grants: liveView(after),
          quotas: quotaView(after, quotaKeysOf(after)),
          pages: bookedPages(after),
        },
        before,
        "restored state",
      );
      for (const s of after.sessions.values()) assert.ok(s.detached, `session ${s.id} restored detached`);
    }),
  ),
  fc.record({ s: n }).map((a) =>
    cmd("resume", a, (r) => {
      const target = pick(
        [...r.broker.sessions.values()].filter((s) => s.detached),
        a.s,
      );
      if (!target) return;
      const p = r.procs.find((x) => x?.pid === target.identity.pid);
      assert.ok(p, "a detached session's process lives");
      let fresh: Session;
      try {
        fresh = openSession(r.broker, identityOf(p.pid, target.identity.uid));
      } catch (e) {
        refusal(e);
        return;
      }
      const found = r.broker.resume(fresh, r.tokens.get(target.id)!, () => {});
      assert.equal(found?.id, target.id, "its own process resumes it");
      r.acted = true;
    }),
  ),
  fc.record({ slot: fc.nat(UIDS.length - 1) }).map((a) =>
    cmd("exit", a, async (r) => {
      const p = r.procs[a.slot];
      if (!p) return;
      r.procs[a.slot] = undefined;
      r.dead.push(p);
      await p.kill();
      r.acted = true;
      const b = r.broker;
      await until(
        () =>
          ![...b.sessions.values()].some((s) => s.identity.pid === p.pid) &&
          ![...b.holds.all()].some((h) => h.pid === p.pid),
        `the core to see pid ${p.pid} exit`,
      );
    }),
  ),
  fc.record({ m: n, attribute: fc.constantFrom("UC", "WC"), fallback: fc.boolean() }).map((a) =>
    cmd("setAttribute", a, (r) => {
      const ms = r
        .attached()
        .flatMap((s) =>
          [...s.deviceFiles.values()].flatMap((df) => [...df.mappings.values()].map((m) => ({ s, df, m }))),
        );
      const at = pick(
        ms.filter((x) => x.m.state === "pending"),
        a.m,
      );
      if (at)
        attempt("setAttribute", () =>
          r.broker.setMappingAttribute(at.s, at.df.id, at.m.cookie, a.attribute as "UC" | "WC", a.fallback),
        );
    }),
  ),
];
/** Weighted towards grants: most steps then find something to act on. */
const commands = [
  ...[openS, openS, openD, openD, openD, openD, mapM, mapM, mapM, mapM, mapM, mapM, mapM, mapM],
  ...[fetchM, fetchM, fetchM, releaseM, releaseM, closeD, endS, revokeM, revokeM, drainD, reloadP],
  ...[restart, resume, resume, exit, setA],
];

test("model-based: random open/map/release/close/revoke/reload/restart/resume/exit sequences keep the core's invariants", async () => {
  let sequences = 0;
  const t0 = performance.now();
  const model: Model = { steps: 0 };
  await fc.assert(
    fc.asyncProperty(fc.commands(commands, { maxCommands: MAX_COMMANDS, size: "max" }), async (cmds) => {
      sequences++;
      const t = tempDir();
      const r = new Real(`${t.dir}/state`);
      try {
        await fc.asyncModelRun(() => ({ model, real: r }), cmds);
      } finally {
        stopKeepingGrants(r.core);
        await killAll([...r.procs.filter((p) => p !== undefined), ...r.dead]);
        t.remove();
      }
    }),
    { numRuns: RUNS },
  );
  const s = ((performance.now() - t0) / 1000).toFixed(1);
  const calls = [...tally].sort().map(([k, v]) => `${k}=${v}`);
  console.log(
    `core model-based test: ${sequences} sequences, ${model.steps} steps in ${s} s (${calls.join(" ")})`,
  );
});
