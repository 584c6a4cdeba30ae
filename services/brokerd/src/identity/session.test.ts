// What a session remembers of its request ids is bounded: the newest 256, by id only.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_REMEMBERED_REQUESTS, Session } from "./session.js";

const session = () =>
  new Session("s1", { uid: 1000, gid: 1000, pid: 1, cgroup: "", pidfd: -1 } as never, ["uid:1000"], "h");

test("remember keeps the newest 256 request ids; a retried id becomes the newest", () => {
  const s = session();
  for (let i = 0; i < 1000; i++) s.remember(`r-${i}`, { cookie: BigInt(i) });
  assert.equal(s.requests.size, MAX_REMEMBERED_REQUESTS);
  assert.equal(s.requests.get("r-999")?.cookie, 999n);
  assert.equal(s.requests.get("r-743"), undefined);
  s.remember("r-744", { cookie: 744n });
  s.remember("r-1000", { deviceFileId: 7n });
  // r-744 was the oldest; retried, it stays and r-745 goes instead.
  assert.equal(s.requests.get("r-744")?.cookie, 744n);
  assert.equal(s.requests.get("r-745"), undefined);
  s.remember("", { cookie: 1n });
  assert.equal(s.requests.has(""), false, "no id, nothing remembered");
});
