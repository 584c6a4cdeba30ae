// Agent: a workload on the workload protocol, as whatever uid runs it. argv: fdSocket page pattern
// (16 hex digits). It says hello, lists the devices, opens sim0, maps BAR2's page `page` WC
// read-write, writes the pattern at byte 0x100 through its own mmap and prints what it got (one
// JSON line); then it waits for an event, prints it, releases the mapping if it was revoked,
// prints that reply, and exits (its connection closing ends its session).
import { closeFd, mmap } from "@vfio-broker/native";
import { Attribute, BackingKind, Layout, Prot } from "@vfio-broker/proto";
import { print } from "./raw.js";
import { statusName, WorkloadClient } from "./workload-client.js";

const [fdSocket, page, pattern] = process.argv.slice(2) as [string, string, string];
const c = await WorkloadClient.connect(fdSocket);
const hello = (await c.hello({ clientName: "workload-agent" })).reply;
if (hello.kind.case !== "hello") throw new Error(`hello: ${statusName(hello.status)} ${hello.message}`);
const w = hello.kind.value;
const list = (await c.call({ kind: { case: "listDevices", value: {} } })).reply;
if (list.kind.case !== "devices") throw new Error(`list: ${list.message}`);
const open = (
  await c.call({ kind: { case: "openDevice", value: { deviceId: "sim0", layout: Layout.COMPACT } } })
).reply;
if (open.kind.case !== "deviceOpened") throw new Error(`open: ${open.message}`);
const df = open.kind.value;
const { reply: granted, fds } = await c.call({
  kind: {
    case: "grant",
    value: {
      deviceFileId: df.deviceFileId,
      regionIndex: 2,
      offset: BigInt(page) * 4096n,
      length: 4096n,
      attribute: Attribute.WC,
      prot: Prot.READ_WRITE,
    },
  },
});
if (granted.kind.case !== "grant" || fds.length !== 1) throw new Error(`grant: ${granted.message}`);
const g = granted.kind.value;
const m = mmap(fds[0]!, g.mmapOffset, Number(g.length), "rw");
closeFd(fds[0]!);
Buffer.from(m.buffer).write(pattern, 0x100, "hex");
const bar2 = df.device?.regions.findIndex((r) => r.index === 2) ?? -1;
print({
  uid: w.identity?.uid,
  version: w.version,
  capabilities: w.capabilities,
  sessionId: w.sessionId,
  devices: list.kind.value.devices.map((d) => d.id),
  wcOnBar2: list.kind.value.devices
    .find((d) => d.id === "sim0")
    ?.regions.find((r) => r.index === 2)
    ?.attributes.includes(Attribute.WC),
  deviceFileId: df.deviceFileId,
  regionCookie: df.regionCookies[bar2],
  cookie: g.cookie,
  effective: Attribute[g.effectiveAttribute],
  backing: BackingKind[g.backing],
  readBack: Buffer.from(m.buffer).toString("hex", 0x100, 0x108),
});
const ev = await c.event();
print({ event: ev?.kind.case, ...(ev?.kind.case === "revocation" ? ev.kind.value : {}) });
if (ev?.kind.case === "revocation") {
  m.unmap();
  const r = (
    await c.call({
      kind: { case: "release", value: { deviceFileId: df.deviceFileId, cookie: ev.kind.value.cookie } },
    })
  ).reply;
  print({ released: statusName(r.status), kind: r.kind.case });
}
c.close();
