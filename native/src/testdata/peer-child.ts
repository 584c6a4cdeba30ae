// peer-child.ts: test helper, spawned (as uid 65534 by identity.test.ts) to be the unprivileged peer.
// It connects to argv[2], claims a FAKE pid in its payload, receives a memfd, maps it, checks the
// parent's bytes, writes its own, reports, then waits on the socket (a pending recv keeps it alive)
// until it is killed.
import { FdSocket, mmap } from "../index.js";

const sock = await FdSocket.connect(process.argv[2]!);
await sock.send(Buffer.from(JSON.stringify({ hello: "peer", pid: 1, uid: 0 })));
const msg = await sock.recv();
if (msg?.fds.length !== 1) throw new Error(`expected one memfd, got ${JSON.stringify(msg)}`);
const map = mmap(msg.fds[0]!, 0, 4096, "rw");
const bytes = new Uint8Array(map.buffer);
const seen = Buffer.from(bytes.subarray(0, 11)).toString();
Buffer.from("from-child").copy(bytes, 100);
await sock.send(Buffer.from(JSON.stringify({ seen, uid: process.getuid?.(), realPid: process.pid })));
await sock.recv(); // wait until killed (or the parent closes)
