// Cooperative holder agent: the Node client library maps sim0 BAR2 [OFFSET, +4 KiB) WC and stays
// connected; on a revocation the library unmaps and tells brokerd (ReleaseMapping), and this
// process stays alive. Prints {"phase":"mapped", pid, deviceFileId, cookie}, then
// {"phase":"revoked", reason} when the revocation arrived.
import { connect } from "@vfio-broker/client";

const [socket, offsetArg = "0"] = process.argv.slice(2);
setInterval(() => {}, 1000);
const client = await connect({ socket: socket!, clientName: "revoke-cooperative" });
const df = await client.open("sim0");
const m = await df.map("BAR2", { offset: BigInt(offsetArg), length: 4096n, attr: "wc", prot: "rw" });
client.on("revocation", (r) =>
  process.stdout.write(`${JSON.stringify({ phase: "revoked", reason: r.reason, unmapped: m.revoked })}\n`),
);
process.stdout.write(
  `${JSON.stringify({ phase: "mapped", pid: process.pid, deviceFileId: String(df.id), cookie: String(m.cookie) })}\n`,
);
process.on("SIGTERM", () => process.exit(0));
