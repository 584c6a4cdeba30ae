// planFdBudget: caps that fit are kept; caps that do not are lowered until clients can never take
// the reserve, whatever the limit.
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import {
  clientFds,
  HELD_REPLY_FDS,
  nofileLimit,
  planFdBudget,
  REFUSED_LINGER_FDS,
  RESERVE_FDS,
} from "./fd-budget.js";

test("planFdBudget: the defaults fit in 20000 fds unchanged", () => {
  const b = planFdBudget(20000, { sessions: 1024, fdConnections: 1024, pendingMappings: 1024 });
  assert.deepEqual(b.caps, { sessions: 1024, fdConnections: 1024, pendingMappings: 1024 });
  assert.equal(b.warning, "");
});

test("clientFds: 2 fds per session (socket, pidfd the exit watch waits on), 1 per connection and pending mapping", () => {
  const fixed = REFUSED_LINGER_FDS + HELD_REPLY_FDS;
  assert.equal(clientFds({ sessions: 10, fdConnections: 0, pendingMappings: 0 }), 20 + fixed);
  assert.equal(clientFds({ sessions: 0, fdConnections: 5, pendingMappings: 7 }), 12 + fixed);
  // The defaults: 2 x 1024 + 1024 + 1024 + 64 + 256, plus the reserve of 512: 4,928.
  assert.equal(
    planFdBudget(4928, { sessions: 1024, fdConnections: 1024, pendingMappings: 1024 }).warning,
    "",
  );
  assert.match(
    planFdBudget(4927, { sessions: 1024, fdConnections: 1024, pendingMappings: 1024 }).warning,
    /RLIMIT_NOFILE is 4927/,
  );
});

test("planFdBudget: at 1024 fds the caps shrink and the reserve stays free", () => {
  const b = planFdBudget(1024, { sessions: 1024, fdConnections: 1024, pendingMappings: 1024 });
  assert.ok(b.clientFds + RESERVE_FDS <= 1024, `clients may take ${b.clientFds}`);
  assert.match(b.warning, /RLIMIT_NOFILE is 1024/);
});

test("planFdBudget: for any limit with room, clients never reach the reserve", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2048, max: 1 << 20 }),
      fc.integer({ min: 1, max: 100000 }),
      fc.integer({ min: 1, max: 100000 }),
      fc.integer({ min: 1, max: 100000 }),
      (nofile, sessions, fdConnections, pendingMappings) => {
        const b = planFdBudget(nofile, { sessions, fdConnections, pendingMappings });
        assert.ok(clientFds(b.caps) + RESERVE_FDS <= nofile);
        assert.ok(b.caps.sessions <= sessions && b.caps.fdConnections <= fdConnections);
      },
    ),
  );
});

test("nofileLimit reads this process's soft limit", () => {
  assert.ok(nofileLimit() >= 1024);
});

test("clientFds counts the replies brokerd may hold for clients that do not read (256) and the refused connections (64)", () => {
  const c = { sessions: 10, fdConnections: 10, pendingMappings: 10 };
  assert.equal(clientFds(c), 2 * 10 + 10 + 10 + REFUSED_LINGER_FDS + HELD_REPLY_FDS);
  assert.equal(HELD_REPLY_FDS, 256);
});
