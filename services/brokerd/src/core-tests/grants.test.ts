// The core in process, grants: quotas across the sessions of one identity, of one container and
// of one tenant; attribute fallback; shared references on one cookie; PAT conflicts between
// mappings. Real parts: the sim backend, a state store in a temp dir, pidfds on child processes.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import type { Session } from "../identity/session.js";
import { TenantMap } from "../identity/subuid.js";
import {
  type Core,
  disconnect,
  fetchFd,
  identityOf,
  map,
  openCore,
  openSession,
  PAGE,
  policy,
  reasonOf,
  rulesFor,
  stopCore,
  testScope,
} from "./support.js";
import { bookedPages, expectedBookings, expectedQuotas, quotaKeysOf } from "./views.js";

const { proc, dir } = testScope(after);

async function withCore(
  yaml: string,
  fn: (c: Core) => void | Promise<void>,
  o: Parameters<typeof openCore>[2] = {},
): Promise<void> {
  const c = openCore(`${dir()}/state`, policy(yaml), o);
  try {
    await fn(c);
    // Whatever a test did, the books agree with the live objects.
    const keys = quotaKeysOf(c.broker);
    const want = expectedQuotas(c.broker, keys);
    for (const k of keys) assert.deepEqual(c.broker.quotas.usage(k), want[k], `quota ${k}`);
    assert.deepEqual(bookedPages(c.broker), expectedBookings(c.broker));
  } finally {
    await stopCore(c);
  }
}

test("quotas count across every session of one identity; a release or a closed connection frees them", async () => {
  await withCore(
    rulesFor([1000], "{ sessions: 2, deviceFiles: 2, mappings: 3, bytes: 64KiB }"),
    ({ broker }) => {
      const p = proc();
      const s1 = openSession(broker, identityOf(p.pid, 1000));
      const s2 = openSession(broker, identityOf(p.pid, 1000));
      assert.equal(
        reasonOf(() => openSession(broker, identityOf(p.pid, 1000))),
        "limit:sessions",
      );
      const df1 = broker.openDevice(s1, "simA", "compact");
      const df2 = broker.openDevice(s2, "simA", "compact");
      assert.equal(
        reasonOf(() => broker.openDevice(s1, "simB", "compact")),
        "limit:deviceFiles",
      );
      map(broker, s1, df1.id, { offset: 0n });
      map(broker, s1, df1.id, { offset: PAGE });
      const third = map(broker, s2, df2.id, { offset: 2n * PAGE });
      assert.equal(
        reasonOf(() => map(broker, s2, df2.id, { offset: 3n * PAGE })),
        "limit:mappings",
      );
      assert.equal(broker.quotas.usage("uid:1000").mappings, 3);
      assert.equal(broker.quotas.usage("uid:1000").pendingMappings, 3);
      broker.releaseMapping(s2, df2.id, third.mapping.cookie);
      // Bytes: 16 pages are 64 KiB; one more page than what is left is refused.
      const big = map(broker, s2, df2.id, { offset: 2n * PAGE, length: 14n * PAGE });
      assert.equal(broker.quotas.usage("uid:1000").bytes, 16n * PAGE);
      broker.releaseMapping(s2, df2.id, big.mapping.cookie);
      assert.equal(
        reasonOf(() => map(broker, s2, df2.id, { offset: PAGE, length: 15n * PAGE })),
        "limit:bytes",
      );
      // A closed connection gives back its session slot, its device file and its mappings.
      disconnect(broker, s1);
      assert.deepEqual(
        { ...broker.quotas.usage("uid:1000") },
        {
          sessions: 1,
          fdConnections: 0,
          pendingMappings: 0,
          deviceFiles: 1,
          mappings: 0,
          unreadFds: 0,
          bytes: 0n,
        },
      );
      const s3 = openSession(broker, identityOf(p.pid, 1000));
      broker.openDevice(s3, "simB", "compact");
    },
  );
});

test("two uids in one container share the container's quota", async () => {
  const cgroup = `/system.slice/docker-${"ab".repeat(32)}.scope`;
  await withCore(rulesFor([1000, 1001], "{ mappings: 2 }"), ({ broker }) => {
    const p = proc();
    const a = openSession(broker, identityOf(p.pid, 1000, { cgroup, cgroupTrusted: true }));
    const b = openSession(broker, identityOf(p.pid, 1001, { cgroup, cgroupTrusted: true }));
    assert.deepEqual(a.quotaKeys, ["uid:1000", `container:${"ab".repeat(32)}`]);
    const dfa = broker.openDevice(a, "simA", "compact");
    const dfb = broker.openDevice(b, "simA", "compact");
    map(broker, a, dfa.id, { offset: 0n });
    map(broker, b, dfb.id, { offset: PAGE });
    // uid 1001 holds one of its two, but the container holds two of its two.
    assert.equal(
      reasonOf(() => map(broker, b, dfb.id, { offset: 2n * PAGE })),
      "limit:mappings",
    );
    assert.equal(broker.quotas.usage(`container:${"ab".repeat(32)}`).mappings, 2);
    // Untrusted, the same path names no container: only the uid is charged.
    const c = openSession(broker, identityOf(p.pid, 1001, { cgroup, cgroupTrusted: false }));
    assert.deepEqual(c.quotaKeys, ["uid:1001"]);
  });
});

test("the uids of one tenant share its fair share of brokerd's sessions; another tenant still gets its minimum", async () => {
  const alice = { key: "uid:1000", owner: "alice", viaRange: true };
  const tenants = new TenantMap([{ start: 100_000, count: 65_536, tenant: alice }]);
  await withCore(
    rulesFor([1000, 100_001, 2000]),
    ({ broker }) => {
      const p = proc();
      assert.equal(broker.tenantOf(100_001).key, "uid:1000");
      // cap 8, reserve 2 (25 %): alone, alice may take the 6 outside the reserve, from both uids.
      for (let i = 0; i < 6; i++) openSession(broker, identityOf(p.pid, i % 2 === 0 ? 1000 : 100_001));
      assert.equal(
        reasonOf(() => openSession(broker, identityOf(p.pid, 100_001))),
        "limit:global_sessions",
      );
      assert.equal(broker.sessionsExhausted(1000), true);
      // The reserve keeps the minimum (2) for a tenant holding less.
      const bob: Session[] = [];
      for (let i = 0; i < 2; i++) bob.push(openSession(broker, identityOf(p.pid, 2000)));
      assert.equal(
        reasonOf(() => openSession(broker, identityOf(p.pid, 2000))),
        "limit:global_sessions",
      );
      disconnect(broker, bob[0]!);
      openSession(broker, identityOf(p.pid, 2000));
    },
    { maxSessions: 8, tenantReservePercent: 25, tenants },
  );
});

test("fallback: WC on a non-prefetchable BAR is refused, or mapped UC with allow_fallback if the policy allows UC", async () => {
  const yaml = `${rulesFor([1000])}  - name: wc-only\n    match: { uids: [1001] }\n    devices: ["sim*"]\n    regions: [BAR0, BAR2]\n    attributes: [WC]\n    prot: [r, rw]\n`;
  await withCore(yaml, ({ broker }) => {
    const p = proc();
    const s = openSession(broker, identityOf(p.pid, 1000));
    const df = broker.openDevice(s, "simA", "compact");
    assert.equal(
      reasonOf(() => map(broker, s, df.id, { region: 0, attribute: "WC" })),
      "attribute_unsupported",
    );
    const g = map(broker, s, df.id, { region: 0, attribute: "WC", allowFallback: true });
    assert.equal(g.mapping.requestedAttribute, "WC");
    assert.equal(g.mapping.effectiveAttribute, "UC");
    assert.match(g.mapping.fallbackReason, /not prefetchable/);
    // The page is booked UC: a UC mapping of it in another session fits, a WC one with fallback
    // shares nothing (another device file) but also becomes UC.
    const s2 = openSession(broker, identityOf(p.pid, 1000));
    const df2 = broker.openDevice(s2, "simA", "compact");
    assert.equal(map(broker, s2, df2.id, { region: 0, attribute: "UC" }).mapping.effectiveAttribute, "UC");
    // Fallback lands on UC, which this identity's rule does not allow: refused, nothing booked.
    const w = openSession(broker, identityOf(p.pid, 1001));
    const dfw = broker.openDevice(w, "simA", "compact");
    assert.equal(
      reasonOf(() =>
        map(broker, w, dfw.id, { region: 0, offset: PAGE, attribute: "WC", allowFallback: true }),
      ),
      "policy:attribute",
    );
    assert.equal(broker.quotas.usage("uid:1001").mappings, 0);
    // WC where it is possible is WC, with no fallback.
    assert.equal(map(broker, w, dfw.id, { region: 2, attribute: "WC" }).mapping.fallbackReason, "");
  });
});

test("shared references: the same range gets the same cookie, each reference counted, fetched and released", async () => {
  await withCore(rulesFor([1000], "{ mappings: 3 }"), ({ broker }) => {
    const p = proc();
    const s = openSession(broker, identityOf(p.pid, 1000));
    const df = broker.openDevice(s, "simA", "compact");
    const a = map(broker, s, df.id, { length: 2n * PAGE });
    const b = map(broker, s, df.id, { length: 2n * PAGE });
    assert.equal(b.mapping, a.mapping);
    assert.equal(a.mapping.refs, 2);
    assert.notEqual(b.ticket, a.ticket);
    const u = broker.quotas.usage("uid:1000");
    assert.equal(u.mappings, 2);
    assert.equal(u.bytes, 2n * PAGE, "no bytes charged twice");
    // Each ticket delivers: the first the pending fd, the second a fresh one for the same cookie.
    fetchFd(broker, s, a);
    assert.equal(a.mapping.state, "delivered");
    fetchFd(broker, s, b);
    // Another prot is another mapping (another cookie) on the same pages.
    const r = map(broker, s, df.id, { length: 2n * PAGE, prot: "r" });
    assert.notEqual(r.mapping.cookie, a.mapping.cookie);
    assert.equal(
      reasonOf(() => map(broker, s, df.id, { length: 2n * PAGE })),
      "limit:mappings",
    );
    // A shared cookie's attribute changes for none of its references.
    assert.equal(
      reasonOf(() => broker.setMappingAttribute(s, df.id, a.mapping.cookie, "UC", false)),
      "shared",
    );
    broker.releaseMapping(s, df.id, a.mapping.cookie);
    assert.equal(df.mappings.get(a.mapping.cookie)?.refs, 1, "one release ends one reference");
    assert.equal(broker.quotas.usage("uid:1000").mappings, 2);
    broker.releaseMapping(s, df.id, a.mapping.cookie);
    assert.equal(df.mappings.has(a.mapping.cookie), false);
    assert.equal(broker.quotas.usage("uid:1000").bytes, 2n * PAGE, "the prot r mapping's pages only");
    assert.equal(
      reasonOf(() => broker.releaseMapping(s, df.id, a.mapping.cookie)),
      "unknown_cookie",
    );
    // In another device file the same range is another mapping (a cookie is per device file).
    const df2 = broker.openDevice(s, "simA", "compact");
    assert.equal(map(broker, s, df2.id, { length: 2n * PAGE }).mapping.refs, 1);
  });
});

test("PAT conflicts: pages mapped WC are refused UC (any session, any device file) until released", async () => {
  await withCore(rulesFor([1000, 1001]), ({ broker }) => {
    const p = proc();
    const a = openSession(broker, identityOf(p.pid, 1000));
    const b = openSession(broker, identityOf(p.pid, 1001));
    const dfa = broker.openDevice(a, "simA", "compact");
    const dfb = broker.openDevice(b, "simA", "legacy");
    const wc = map(broker, a, dfa.id, { offset: 0n, length: 2n * PAGE, attribute: "WC" });
    assert.equal(
      reasonOf(() => map(broker, b, dfb.id, { offset: PAGE, length: 2n * PAGE, attribute: "UC" })),
      "attribute_conflict",
    );
    assert.equal(
      reasonOf(() => map(broker, a, dfa.id, { offset: PAGE, length: PAGE, attribute: "UC" })),
      "attribute_conflict",
    );
    // The refusal charged nothing.
    assert.equal(broker.quotas.usage("uid:1001").mappings, 0);
    // Next to the WC pages, and WC on them, is fine; so is the other device's same offset.
    const uc = map(broker, b, dfb.id, { offset: 2n * PAGE, length: 2n * PAGE, attribute: "UC" });
    map(broker, b, dfb.id, { offset: PAGE, length: PAGE, attribute: "WC" });
    const dfo = broker.openDevice(b, "simB", "compact");
    map(broker, b, dfo.id, { offset: 0n, attribute: "UC" });
    // allow_fallback does not turn a conflict into UC: WC is possible here, and refused.
    assert.equal(
      reasonOf(() => map(broker, a, dfa.id, { offset: 2n * PAGE, attribute: "WC", allowFallback: true })),
      "attribute_conflict",
    );
    // Released (the WC one and the WC page of b), the pages take UC.
    broker.releaseMapping(a, dfa.id, wc.mapping.cookie);
    assert.equal(
      reasonOf(() => map(broker, a, dfa.id, { offset: 0n, length: PAGE, attribute: "UC" })),
      "",
    );
    assert.equal(
      reasonOf(() => map(broker, a, dfa.id, { offset: PAGE, length: PAGE, attribute: "UC" })),
      "attribute_conflict",
    );
    broker.closeDevice(b, dfb.id);
    assert.equal(uc.mapping.deviceFile.mappings.size, 0);
    map(broker, a, dfa.id, { offset: PAGE, length: 3n * PAGE, attribute: "UC" });
  });
});
