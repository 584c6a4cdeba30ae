// Holder agent: maps sim0 (or DEVICE) BAR2 [OFFSET, +4 KiB) WC read-write through the raw protocol (no client
// library, so nothing unmaps on a revocation), then ignores every revocation and keeps writing a
// counter into the first 4 bytes of its mmap every 20 ms until it is killed. Mode "drop-session"
// closes its broker connection once mapped (its session ends, the mmap stays). Prints
// {"phase":"mapped", pid, deviceFileId, cookie} once mapped, and {"phase":"writing", n} every 50
// writes.
import { fetchFd } from "@vfio-broker/client";
import { closeFd, mmap } from "@vfio-broker/native";
import { Attribute, Layout, Prot } from "@vfio-broker/proto";
import { brokerClient } from "../../e2e/agents/raw.js";

const [socket, offsetArg = "0", mode = "ignore", deviceId = "sim0"] = process.argv.slice(2);
const alive = setInterval(() => {}, 1000);
const rpc = brokerClient(socket!);
const hello = await rpc.hello({ clientName: "revoke-holder" });
const df = await rpc.openDevice({ deviceId, layout: Layout.COMPACT });
const m = await rpc.createMapping({
  deviceFileId: df.deviceFileId,
  regionIndex: 2,
  offset: BigInt(offsetArg),
  length: 4096n,
  attribute: Attribute.WC,
  prot: Prot.READ_WRITE,
});
const got = await fetchFd(hello.capabilities!.fdSocketPath, m.ticket);
const map = mmap(got.fd, got.reply.mmapOffset, 4096, "rw");
closeFd(got.fd);
const words = new Uint32Array(map.buffer);
process.stdout.write(
  `${JSON.stringify({
    phase: "mapped",
    pid: process.pid,
    deviceFileId: String(df.deviceFileId),
    cookie: String(m.mapping?.cookie ?? 0n),
  })}\n`,
);
if (mode === "drop-session") {
  rpc.close();
  process.stdout.write(`${JSON.stringify({ phase: "dropped" })}\n`);
}
let n = 0;
setInterval(() => {
  n++;
  words[0] = 0x5a000000 + n;
  if (n % 50 === 0) process.stdout.write(`${JSON.stringify({ phase: "writing", n })}\n`);
}, 20);
process.on("SIGTERM", () => {
  clearInterval(alive);
  process.exit(0);
});
