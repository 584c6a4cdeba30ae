// Agent: a workload that sees brokerd's socket directory at another path (a container's bind mount).
// argv: socket path [transport]. Connects with no VFIO_BROKER_FD_SOCKET (on the transport given,
// "workload" by default), maps sim0 BAR0, writes and reads back
// a word through the mapping, and prints {ok, fdSocketPath, fdSocketName, advertised, identity, value}.
import { connect } from "@vfio-broker/client";
import { print } from "./raw.js";

const socket = process.argv[2]!;
const transport = (process.argv[3] ?? "workload") as "workload" | "grpc";
delete process.env.VFIO_BROKER_FD_SOCKET;
try {
  const c = await connect({ socket, lease: false, transport });
  const df = await c.open("sim0");
  const m = await df.map(0, { length: 4096 });
  m.writeBytes(0, Buffer.from("mounted!"));
  const value = m.readBytes(0, 8).toString();
  print({
    ok: true,
    fdSocketPath: c.fdSocketPath,
    fdSocketName: c.capabilities.fdSocketName,
    advertised: c.capabilities.fdSocketPath,
    identity: c.identity,
    transport: c.transport,
    value,
  });
  await c.close();
} catch (e) {
  print({ ok: false, code: (e as { code?: string }).code, message: (e as Error).message });
}
