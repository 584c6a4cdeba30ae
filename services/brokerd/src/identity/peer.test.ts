// cgroupFromProcText: the cgroup path brokerd uses from /proc/<pid>/cgroup, on cgroup v2, hybrid and v1 hosts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { cgroupFromProcText } from "./peer.js";

const ID = "4f3c2b1a".repeat(8);

test("cgroup v2: the 0:: line", () => {
  assert.equal(
    cgroupFromProcText(`0::/system.slice/docker-${ID}.scope\n`),
    `/system.slice/docker-${ID}.scope`,
  );
  assert.equal(cgroupFromProcText("0::/\n"), "/");
  assert.equal(cgroupFromProcText(""), "");
});

test("cgroup v1: 0:: says / for everyone, so the name=systemd hierarchy names the container", () => {
  const v1 = [
    `12:pids:/docker/${ID}`,
    `4:memory:/docker/${ID}`,
    `1:name=systemd:/docker/${ID}`,
    "0::/",
    "",
  ].join("\n");
  assert.equal(cgroupFromProcText(v1), `/docker/${ID}`);
  // a host process on a v1 host
  assert.equal(cgroupFromProcText("4:memory:/user.slice\n1:name=systemd:/\n0::/\n"), "/");
  // hybrid: the unified hierarchy is real, it wins
  assert.equal(
    cgroupFromProcText(`1:name=systemd:/system.slice/a.service\n0::/system.slice/docker-${ID}.scope\n`),
    `/system.slice/docker-${ID}.scope`,
  );
});
