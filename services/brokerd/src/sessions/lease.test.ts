// The lease rules: the expiry is three keepalive intervals, its message says so, a session has one
// lease, and LeaseExpiry fires once unless stopped (on node:test's mocked clock: no
// real time is waited for or measured).
import assert from "node:assert/strict";
import { mock, test } from "node:test";
import fc from "fast-check";
import { BrokerError } from "../errors.js";
import { Session } from "../identity/session.js";
import {
  checkNoLease,
  type LeaseEnd,
  LeaseExpiry,
  leaseExpired,
  leaseExpiryMs,
  MISSED_INTERVALS,
} from "./lease.js";

const session = () =>
  new Session("s1", { uid: 1000, gid: 1000, pid: 1, cgroup: "", pidfd: -1 } as never, ["uid:1000"], "h");

test("a lease expires after three intervals, and the message says how long and why", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 3_600_000 }), (ms) => {
      assert.equal(leaseExpiryMs(ms), MISSED_INTERVALS * ms);
      const end = leaseExpired(ms);
      assert.equal(end.reason, "lease-expired");
      assert.equal(
        end.message,
        `no keepalive for ${3 * ms} ms (three intervals of ${ms} ms); the session ended and its mappings were released`,
      );
    }),
  );
});

test("a session has at most one lease", () => {
  const s = session();
  checkNoLease(s);
  s.lease = { send: () => {}, end: async () => {} };
  assert.throws(
    () => checkNoLease(s),
    (e: unknown) => e instanceof BrokerError && e.code === "FAILED_PRECONDITION" && e.reason === "lease",
  );
});

// (refresh() is Node's Timeout.refresh, which the mocked clock does not model: the e2e lease tests
// keep a session alive with keepalives.)
test("LeaseExpiry: expires once after three intervals of silence; stop ends it", () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const ends: LeaseEnd[] = [];
    new LeaseExpiry(100, (end) => ends.push(end));
    mock.timers.tick(299);
    assert.equal(ends.length, 0);
    mock.timers.tick(1);
    assert.deepEqual(ends, [leaseExpired(100)]);
    mock.timers.tick(1000);
    assert.equal(ends.length, 1, "once");

    const stopped: LeaseEnd[] = [];
    const f = new LeaseExpiry(100, (end) => stopped.push(end));
    f.stop();
    mock.timers.tick(1000);
    assert.equal(stopped.length, 0);
  } finally {
    mock.timers.reset();
  }
});
