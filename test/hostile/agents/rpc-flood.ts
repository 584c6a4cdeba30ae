// Attacker agent: CONNECTIONS sessions of one uid, each keeping CONCURRENCY cheap calls
// (ListDevices) in flight back to back for MS: a flood of legitimate-looking work. Prints
// {calls, errors: {code: n}, callsPerSecond}.
import { brokerClient, codeOf } from "../../e2e/agents/raw.js";

const [socket, connectionsArg = "16", concurrencyArg = "32", msArg = "5000"] = process.argv.slice(2);
const end = Date.now() + Number(msArg);
let calls = 0;
const errors: Record<string, number> = {};
const clients = Array.from({ length: Number(connectionsArg) }, () => brokerClient(socket!));
const t0 = Date.now();
await Promise.all(
  clients.flatMap((c) =>
    Array.from({ length: Number(concurrencyArg) }, async () => {
      while (Date.now() < end) {
        try {
          await c.listDevices({}, { timeoutMs: 5000 });
          calls++;
        } catch (e) {
          const code = codeOf(e);
          errors[code] = (errors[code] ?? 0) + 1;
        }
      }
    }),
  ),
);
for (const c of clients) c.close();
process.stdout.write(
  `${JSON.stringify({ calls, errors, callsPerSecond: Math.round((calls * 1000) / (Date.now() - t0)) })}\n`,
);
process.exit(0);
