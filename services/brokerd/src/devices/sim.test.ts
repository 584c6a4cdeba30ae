// The sim backend's mapping fds: each has the granted access mode (a read-only grant never gets a
// writable fd), shows the bytes brokerd reads and writes, and is opened once
// per region and mode (a grant opens and closes nothing), and all of them are closed with the
// device or the backend.
import assert from "node:assert/strict";
import { constants, readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import type { BackingRequest, Prot } from "./backend.js";
import { SimBackend } from "./sim.js";

/** The fd's file status flags (fdinfo's octal "flags:"), as the kernel holds them. */
function flagsOf(fd: number): number {
  const m = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
  assert.ok(m, `fdinfo of ${fd}`);
  return Number.parseInt(m[1]!, 8);
}

const O_ACCMODE = 3;
const openFds = () => readdirSync("/proc/self/fd").length;

function request(b: SimBackend, prot: Prot): BackingRequest {
  const region = b.devices()[0]!.regions.find((r) => r.index === 2)!;
  return {
    deviceId: "sim0",
    region,
    offset: 0n,
    length: 4096n,
    attribute: "WC",
    prot,
    allowFallback: false,
    allowDeviceFd: false,
  };
}

test("sim: a read-only grant gets an O_RDONLY fd, a read-write grant an O_RDWR one", () => {
  const before = openFds();
  const b = new SimBackend();
  try {
    const ro = b.openBacking(request(b, "r"));
    const rw = b.openBacking(request(b, "rw"));
    assert.equal(flagsOf(ro.fd) & O_ACCMODE, constants.O_RDONLY);
    assert.equal(flagsOf(rw.fd) & O_ACCMODE, constants.O_RDWR);
    assert.notEqual(ro.fd, rw.fd);
    // The same bytes as brokerd's own description.
    b.write("sim0", 2, 0n, Buffer.from("abcd"));
    assert.equal(readFileSync(`/proc/self/fd/${ro.fd}`).subarray(0, 4).toString(), "abcd");
    ro.handedOver();
    rw.release();
  } finally {
    b.close();
  }
  assert.equal(openFds(), before, "the backend's fds are all closed with it");
});

test("sim: a grant reuses its region's description; handing over or releasing one leaves it open", () => {
  const b = new SimBackend();
  try {
    const first = b.openBacking(request(b, "r"));
    first.handedOver();
    first.release();
    const fds = openFds();
    const second = b.openBacking(request(b, "r"));
    assert.equal(second.fd, first.fd, "the same description, not a new open");
    assert.equal(openFds(), fds, "a grant opens no fd");
    assert.equal(flagsOf(second.fd) & O_ACCMODE, constants.O_RDONLY, "still open, still read-only");
    second.release();
    const third = b.openBacking(request(b, "rw"));
    assert.equal(flagsOf(third.fd) & O_ACCMODE, constants.O_RDWR);
    third.release();
    const held = openFds();
    b.removeDevice("sim0");
    assert.ok(openFds() < held, "removing the device closes its regions' descriptions");
  } finally {
    b.close();
  }
});
