// Attacker agent: SESSIONS sessions of one uid, each opening sim0 and creating 4 KiB mappings it
// never fetches, until brokerd refuses; holds them until SIGTERM. Prints {granted, refused: {code:
// n}, messages (first few)}.
import { Attribute, Prot } from "@vfio-broker/proto";
import { brokerClient, codeOf } from "../../e2e/agents/raw.js";

// Registered first thing: the test may signal as soon as the attack is in place.
// The interval keeps the event loop alive while the agent only holds what it took.
const stopped = new Promise<void>((resolve) => {
  const alive = setInterval(() => {}, 1000);
  process.once("SIGTERM", () => {
    clearInterval(alive);
    resolve();
  });
});
const [socket, sessionsArg = "45", perSession = "200"] = process.argv.slice(2);
let granted = 0;
const refused: Record<string, number> = {};
const messages = new Set<string>();
const clients = Array.from({ length: Number(sessionsArg) }, () => brokerClient(socket!));
await Promise.all(
  clients.map(async (c) => {
    try {
      await c.hello({ clientName: "pending-attacker" });
      const df = await c.openDevice({ deviceId: "sim0" });
      for (let i = 0; i < Number(perSession); i++) {
        try {
          await c.createMapping({
            deviceFileId: df.deviceFileId,
            regionIndex: 2,
            offset: BigInt(i % 4096) * 4096n,
            length: 4096n,
            attribute: Attribute.WC,
            prot: Prot.READ_WRITE,
          });
          granted++;
        } catch (e) {
          const code = codeOf(e);
          refused[code] = (refused[code] ?? 0) + 1;
          if (messages.size < 4) messages.add((e as Error).message.slice(0, 200));
          if (code === "RESOURCE_EXHAUSTED") break;
        }
      }
    } catch (e) {
      const code = codeOf(e);
      refused[code] = (refused[code] ?? 0) + 1;
      if (messages.size < 4) messages.add((e as Error).message.slice(0, 200));
    }
  }),
);
process.stdout.write(`${JSON.stringify({ phase: "holding", granted })}\n`);
await stopped;
for (const c of clients) c.close();
process.stdout.write(`${JSON.stringify({ granted, refused, messages: [...messages] })}\n`);
process.exit(0);
