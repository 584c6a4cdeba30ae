// Hostile agent: opens `count` connections to a socket and holds them without sending anything,
// so that brokerd spends one fd on each until its idle timeout. argv: socket count seconds. Prints
// how many connections it opened; exits (closing them all) after `seconds`, or at once on SIGTERM.
import { FdSocket } from "@vfio-broker/native";
import { print } from "../../e2e/agents/raw.js";

const [path, count = "64", seconds = "10"] = process.argv.slice(2);
const held: FdSocket[] = [];
const errors: string[] = [];
for (let i = 0; i < Number(count); i++) {
  try {
    held.push(await FdSocket.connect(path!));
  } catch (e) {
    if (errors.length < 3) errors.push((e as Error).message);
  }
}
// The parent waits for this line before it acts.
process.stdout.write(`${JSON.stringify({ holding: held.length })}\n`);
await new Promise<void>((resolve) => {
  const t = setTimeout(resolve, Number(seconds) * 1000);
  process.once("SIGTERM", () => {
    clearTimeout(t);
    resolve();
  });
});
for (const s of held) s.close();
print({ held: held.length, errors });
