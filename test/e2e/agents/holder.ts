// Agent: opens sim0, creates one mapping (argv: region offset length attr [fetch]) and prints
// {ticket, cookie, deviceFileId, sessionId}; with "fetch" it also takes the fd, maps it and
// writes its pid at offset 0. Then it holds everything until killed or stdin closes.

import { fetchFd } from "@vfio-broker/client";
import { mmap } from "@vfio-broker/native";
import { Attribute, Layout, Prot } from "@vfio-broker/proto";
import { brokerClient, codeOf, print } from "./raw.js";

const [socket, region = "2", offset = "0", length = "4096", attr = "WC", fetch = ""] = process.argv.slice(2);
const c = brokerClient(socket!);
try {
  const hello = await c.hello({ clientName: "holder" });
  const df = await c.openDevice({ deviceId: "sim0", layout: Layout.COMPACT });
  const r = await c.createMapping({
    deviceFileId: df.deviceFileId,
    regionIndex: Number(region),
    offset: BigInt(offset),
    length: BigInt(length),
    attribute: attr === "UC" ? Attribute.UC : Attribute.WC,
    prot: Prot.READ_WRITE,
  });
  let wrote = false;
  if (fetch === "fetch") {
    const { reply, fd } = await fetchFd(hello.capabilities!.fdSocketPath, r.ticket);
    const m = mmap(fd, reply.mmapOffset, Number(reply.length), "rw");
    new DataView(m.buffer).setUint32(0, process.pid, true);
    wrote = true;
  }
  print({
    ok: true,
    ticket: r.ticket,
    cookie: r.mapping!.cookie,
    deviceFileId: df.deviceFileId,
    sessionId: hello.sessionId,
    pid: process.pid,
    wrote,
  });
} catch (e) {
  print({ ok: false, code: codeOf(e), message: (e as Error).message });
  process.exit(1);
}
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
