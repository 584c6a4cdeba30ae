// Agent: one identity's sessions quota shared by its gRPC and workload-protocol sessions, as
// whatever uid runs it (the test's policy gives that uid `sessions: 2`). argv: brokerSocket
// fdSocket. Prints one JSON line with what each step got.
import { brokerClient, codeOf, print } from "./raw.js";
import { statusName, WorkloadClient } from "./workload-client.js";

const [socket, fdSocket] = process.argv.slice(2) as [string, string];
const out: Record<string, unknown> = {};
const grpcHello = async () => {
  const rpc = brokerClient(socket);
  try {
    await rpc.hello({ clientName: "quota" });
    return { rpc, code: "OK" };
  } catch (e) {
    rpc.close();
    return { rpc: undefined, code: codeOf(e) };
  }
};
const workloadHello = async () => {
  const c = await WorkloadClient.connect(fdSocket);
  const r = (await c.hello()).reply;
  return { c, status: statusName(r.status), code: r.grpcCode, message: r.message };
};
// Two gRPC sessions take the quota: a workload hello is refused.
const a = await grpcHello();
const b = await grpcHello();
out.grpc = [a.code, b.code];
const refused = await workloadHello();
out.workloadWhileFull = { status: refused.status, code: refused.code, message: refused.message };
out.closedAfterRefusal = (await refused.c.reply()) === null;
refused.c.close();
// One gRPC session goes: the workload hello gets its slot (once brokerd saw the close).
b.rpc?.close();
let w = await workloadHello();
for (let i = 0; i < 200 && w.status !== "OK"; i++) {
  w.c.close();
  await new Promise((r) => setTimeout(r, 25));
  w = await workloadHello();
}
out.workloadAfterClose = w.status;
// Now one gRPC + one workload session: a third gRPC session is refused.
out.grpcWhileFull = (await grpcHello()).code;
w.c.close();
a.rpc?.close();
print(out);
