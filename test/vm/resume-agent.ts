// Agent for the VM suite's restart phase: a workload on the Node client library (auto-resume on)
// maps BAR2 of the vfio device UC, writes a marker through its mmap and reads the PCI command
// register, then waits for "check" on stdin while brokerd is replaced (--take-over). After that it
// reads the marker back through its mmap and through the new brokerd (ReadRegion), the command
// register again, releases and exits. One "RESUME {json}" line per step. argv: socket bdf
import { createInterface } from "node:readline";
import { connect } from "@vfio-broker/client";

const [socket, bdf] = process.argv.slice(2) as [string, string];
const out = (o: Record<string, unknown>) => console.log(`RESUME ${JSON.stringify(o)}`);
const MARK = "VFIO-RESTART-KEPT-uid65534";
const AT = 0x100;

const c = await connect({ socket, clientName: "vm-resume" });
let resumedMs = -1;
c.on("resumed", (e) => {
  resumedMs = e.downtimeMs;
});
c.on("leaseLost", (e) => out({ op: "lost", reason: e.reason }));
const df = await c.open(bdf);
const m = await df.map(2, { offset: 0xa0000, length: 0x1000, attr: "uc" });
Buffer.from(m.buffer).write(MARK, AT, "latin1");
const command = async () => (await df.read(df.region(7).cookie + 4n, 2)).readUInt16LE(0);
out({ op: "mapped", backing: m.backing, command: await command(), pid: process.pid });
await new Promise<void>((r) => createInterface({ input: process.stdin }).once("line", () => r()));
const viaMmap = Buffer.from(m.buffer).toString("latin1", AT, AT + MARK.length);
const viaBrokerd = (await df.read(m.cookie + BigInt(AT), MARK.length)).toString("latin1");
out({ op: "checked", viaMmap, viaBrokerd, command: await command(), resumedMs, mark: MARK });
await m.release();
await c.close();
process.exit(0);
