// Attacker agent: SESSIONS sessions of one uid (separate connections), each doing Hello, OpenDevice
// sim0 and one CreateMapping of LENGTH bytes of BAR2 at offset 0 (never fetched). Holds until
// SIGTERM. Prints {hello: {code: n}, open: {...}, map: {...}, messages}.
import { Attribute, Prot } from "@vfio-broker/proto";
import { brokerClient, codeOf } from "../../e2e/agents/raw.js";

// Registered first: the test may signal as soon as the attack is in place.
const stopped = new Promise<void>((resolve) => {
  const alive = setInterval(() => {}, 1000);
  process.once("SIGTERM", () => {
    clearInterval(alive);
    resolve();
  });
});
const [socket, sessionsArg = "4", lengthArg = "16777216"] = process.argv.slice(2);
const tally = {
  hello: {} as Record<string, number>,
  open: {} as Record<string, number>,
  map: {} as Record<string, number>,
};
const messages = new Set<string>();
const count = (k: keyof typeof tally, code: string) => {
  tally[k][code] = (tally[k][code] ?? 0) + 1;
};
const clients = Array.from({ length: Number(sessionsArg) }, () => brokerClient(socket!));
// One after another, so which ones the quota refuses is deterministic.
for (const c of clients) {
  let step: keyof typeof tally = "hello";
  try {
    await c.hello({ clientName: "quota-attacker" }, { timeoutMs: 5000 });
    count("hello", "OK");
    step = "open";
    const df = await c.openDevice({ deviceId: "sim0" });
    count("open", "OK");
    step = "map";
    await c.createMapping({
      deviceFileId: df.deviceFileId,
      regionIndex: 2,
      offset: 0n,
      length: BigInt(lengthArg),
      attribute: Attribute.WC,
      prot: Prot.READ_WRITE,
    });
    count("map", "OK");
  } catch (e) {
    count(step, codeOf(e));
    if (messages.size < 6) messages.add((e as Error).message.slice(0, 220));
  }
}
process.stdout.write(`${JSON.stringify({ phase: "holding", ...tally })}\n`);
await stopped;
for (const c of clients) c.close();
process.stdout.write(`${JSON.stringify({ ...tally, messages: [...messages] })}\n`);
process.exit(0);
