// cgroupFromProcText: the cgroup path brokerd uses from /proc/<pid>/cgroup, on cgroup v2, hybrid and v1 hosts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { cgroupFromProcText, processStartTime, startTimeFromStat } from "./peer.js";

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

test("text with two lines for one hierarchy is not the kernel's: no cgroup", () => {
  assert.equal(cgroupFromProcText(`0::/user.slice/x\n0::/system.slice/docker-${ID}.scope\n`), "");
  assert.equal(cgroupFromProcText(`1:name=systemd:/a\n1:name=systemd:/docker/${ID}\n0::/\n`), "");
});

test("start time: field 22 of /proc/<pid>/stat, also when the command name has spaces and ')'", () => {
  const rest = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
  assert.equal(startTimeFromStat(`123 (node) ${rest}`), "987654");
  assert.equal(startTimeFromStat(`123 (a b) c)) ${rest}`), "987654");
  assert.equal(startTimeFromStat("123 (x) S 1"), "");
  // This process's own: a number, and stable.
  assert.match(processStartTime(process.pid), /^\d+$/);
  assert.equal(processStartTime(process.pid), processStartTime(process.pid));
});
