// The /proc/net/tcp{,6} parser and peer lookup: real lines as the kernel prints them (little- and
// big-endian), the peer found by the reversed 4-tuple, only ESTABLISHED sockets counted, and
// Node's address spellings (IPv4, IPv6, IPv4-mapped) all meaning the same bytes. Then the real
// thing: a connection made as uid 65534 is found as 65534 in this machine's /proc/net/tcp.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { endianness } from "node:os";
import { test } from "node:test";
import fc from "fast-check";
import { addressBytes, parseProcNetTcp, peerUid, procAddressBytes } from "./tcp-peer.js";

const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:24D8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 95836 1 0000000060ed9594 100 0 0 10 0
   1: 0100007F:D431 0100007F:24D8 01 00000000:00000000 00:00000000 00000000 65534        0 96001 1 0000000060ed9595 20 4 30 10 -1
   2: 0100007F:24D8 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 96002 1 0000000060ed9596 20 4 30 10 -1
   3: 0100007F:D432 0100007F:24D8 06 00000000:00000000 03:000008FF 00000000     0        0 0 3 000000007162439a
   4: 0100007F:D433 0100007F:24D8 04 00000000:00000000 00:00000000 00000000     0        0 0 3 000000007162439b
   5: 0100007F:D434 0100007F:24D8 01 00000000:00000000 00:00000000 00000000  1000        0 96003 1 0000000060ed9597 20 4 30 10 -1
   6: 0100007F:D43`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:D500 00000000000000000000000001000000:1F90 01 00000000:00000000 00:00000000 00000000  4242        0 1 1 0 20 4 30 10 -1
   1: 0000000000000000FFFF00000100007F:D501 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  4243        0 1 1 0 20 4 30 10 -1
`;
const ME = { localAddress: "127.0.0.1", localPort: 0x24d8 };

test("parseProcNetTcp + peerUid: the peer's line, by the reversed 4-tuple, ESTABLISHED only", () => {
  const t = parseProcNetTcp(TCP);
  assert.equal(peerUid(t, { ...ME, remoteAddress: "127.0.0.1", remotePort: 0xd431 }), 65534);
  assert.equal(peerUid(t, { ...ME, remoteAddress: "::ffff:127.0.0.1", remotePort: 0xd431 }), 65534);
  assert.equal(peerUid(t, { ...ME, remoteAddress: "127.0.0.1", remotePort: 0xd434 }), 1000);
  // TIME_WAIT and FIN_WAIT1 (an orphan: the kernel shows uid 0) are nobody, not root.
  assert.equal(peerUid(t, { ...ME, remoteAddress: "127.0.0.1", remotePort: 0xd432 }), undefined);
  assert.equal(peerUid(t, { ...ME, remoteAddress: "127.0.0.1", remotePort: 0xd433 }), undefined);
  // Our own end is not the peer: the same line seen from the other side does not match.
  assert.equal(
    peerUid(t, {
      localAddress: "127.0.0.1",
      localPort: 0xd431,
      remoteAddress: "127.0.0.1",
      remotePort: 0x24d8,
    }),
    0,
  );
  assert.equal(peerUid(t, { ...ME, remoteAddress: "127.0.0.2", remotePort: 0xd431 }), undefined);
  assert.equal(peerUid(t, { ...ME, remoteAddress: "not an address", remotePort: 0xd431 }), undefined);
});

test("parseProcNetTcp: tcp6, with IPv6 and IPv4-mapped peers", () => {
  const t = parseProcNetTcp(TCP6);
  assert.equal(
    peerUid(t, { localAddress: "::1", localPort: 0x1f90, remoteAddress: "::1", remotePort: 0xd500 }),
    4242,
  );
  assert.equal(
    peerUid(t, {
      localAddress: "::ffff:127.0.0.1",
      localPort: 0x1f90,
      remoteAddress: "127.0.0.1",
      remotePort: 0xd501,
    }),
    4243,
  );
});

test("procAddressBytes: big-endian hosts print the address as is", () => {
  assert.deepEqual(procAddressBytes("7F000001", false), addressBytes("127.0.0.1"));
  assert.deepEqual(procAddressBytes("0100007F", true), addressBytes("127.0.0.1"));
  assert.deepEqual(procAddressBytes("00000000000000000000000000000001", false), addressBytes("::1"));
  assert.equal(procAddressBytes("0100007"), undefined);
});

test("addressBytes: IPv6 spellings of one address are one address; junk is undefined", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }), (w) => {
      const full = w.map((x) => x.toString(16)).join(":");
      const padded = w.map((x) => x.toString(16).padStart(4, "0").toUpperCase()).join(":");
      assert.deepEqual(addressBytes(full), addressBytes(padded));
      // Compress the longest zero run, if any.
      const zeroAt = w.indexOf(0);
      if (zeroAt >= 0) {
        let end = zeroAt;
        while (end < 8 && w[end] === 0) end++;
        const c = `${w
          .slice(0, zeroAt)
          .map((x) => x.toString(16))
          .join(":")}::${w
          .slice(end)
          .map((x) => x.toString(16))
          .join(":")}`;
        assert.deepEqual(addressBytes(c), addressBytes(full), c);
      }
      const b = addressBytes(full)!;
      assert.deepEqual(
        [...b],
        w.flatMap((x) => [x >> 8, x & 0xff]),
      );
    }),
  );
  for (const junk of ["", "1.2.3", "1.2.3.256", ":::", "1:::2", "1:2:3:4:5:6:7:8:9", "g::1", "::1::"])
    assert.equal(addressBytes(junk), undefined, junk);
  assert.deepEqual(addressBytes("::ffff:127.0.0.1"), addressBytes("127.0.0.1"));
  assert.deepEqual(addressBytes("fe80::1%lo"), addressBytes("fe80::1"));
});

test("parseProcNetTcp: any text, no throw; every uid found is one the text holds", () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.string(), fc.constantFrom(...TCP.split("\n"), ...TCP6.split("\n")))),
      (lines) => {
        const t = parseProcNetTcp(lines.join("\n"));
        for (const uid of t.values()) assert.ok(Number.isInteger(uid) && uid >= 0);
      },
    ),
  );
});

test("this machine: a connection from uid 65534 is found as 65534 in /proc/net/tcp", {
  skip: process.getuid?.() !== 0,
}, async () => {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<import("node:net").Socket>((r) => server.once("connection", r));
  const child = spawn(
    process.execPath,
    ["-e", `require("net").connect(${port}, "127.0.0.1"); setTimeout(() => {}, 5000)`],
    { uid: 65534, gid: 65534, stdio: "ignore" },
  );
  const s = await accepted;
  const t = parseProcNetTcp(readFileSync("/proc/net/tcp", "latin1"), endianness() === "LE");
  const uid = peerUid(t, {
    localAddress: s.localAddress!,
    localPort: s.localPort!,
    remoteAddress: s.remoteAddress!,
    remotePort: s.remotePort!,
  });
  child.kill();
  s.destroy();
  server.close();
  assert.equal(uid, 65534);
});

test("parseProcNetTcp with a port: only sockets connected to it, the same answers for them", () => {
  const all = parseProcNetTcp(TCP);
  const only = parseProcNetTcp(TCP, true, new Map(), 0x24d8);
  for (const [k, v] of only) assert.equal(all.get(k), v);
  assert.equal(peerUid(only, { ...ME, remoteAddress: "127.0.0.1", remotePort: 0xd431 }), 65534);
  assert.equal(only.size, 2); // 0xd431 and 0xd434, both ESTABLISHED to 0x24d8
});

test("tcpPeerUid (the kernel's exact lookup) agrees with /proc/net/tcp, and knows uid 65534", {
  skip: process.getuid?.() !== 0,
}, async () => {
  const { tcpPeerUid } = await import("./tcp-owner.js");
  for (const host of ["127.0.0.1", "::1"]) {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, host, r));
    const port = (server.address() as { port: number }).port;
    const accepted = new Promise<import("node:net").Socket>((r) => server.once("connection", r));
    const child = spawn(
      process.execPath,
      ["-e", `require("net").connect(${port}, ${JSON.stringify(host)}); setTimeout(() => {}, 5000)`],
      { uid: 65534, gid: 65534, stdio: "ignore" },
    );
    const s = await accepted;
    const conn = {
      localAddress: s.localAddress!,
      localPort: s.localPort!,
      remoteAddress: s.remoteAddress!,
      remotePort: s.remotePort!,
    };
    const file = host.includes(":") ? "/proc/net/tcp6" : "/proc/net/tcp";
    const fromProc = peerUid(parseProcNetTcp(readFileSync(file, "latin1"), endianness() === "LE"), conn);
    assert.equal(tcpPeerUid(conn), 65534, host);
    assert.equal(fromProc, 65534, host);
    // A port nobody connected from is nobody, not root.
    assert.equal(tcpPeerUid({ ...conn, remotePort: 1 }), undefined);
    child.kill();
    s.destroy();
    server.close();
  }
});
