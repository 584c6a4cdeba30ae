// Victim agent: a well-behaved client that, for `seconds`, connects (a new session each time, as
// the CLI does), opens sim0, maps 4 KiB of BAR2 write-combined, writes and reads back one word
// through the mapping, releases it and disconnects. argv: socket seconds. Prints how many attempts
// there were, how many succeeded, the slowest one and the first errors.
import { connect } from "@vfio-broker/client";
import { print } from "../../e2e/agents/raw.js";

const [socket, seconds = "10"] = process.argv.slice(2);
const end = Date.now() + Number(seconds) * 1000;
let attempts = 0;
let successes = 0;
let slowestMs = 0;
const errors: string[] = [];
while (Date.now() < end) {
  attempts++;
  const t0 = performance.now();
  try {
    const client = await connect({ socket: socket!, clientName: "hostile-victim", timeoutMs: 10_000 });
    try {
      const df = await client.open("sim0");
      const m = await df.map("BAR2", { offset: 0n, length: 4096n, attr: "wc", prot: "rw" });
      m.write32(0, attempts);
      if (m.read32(0) !== attempts) throw new Error("read back a different word");
      await m.release();
      successes++;
    } finally {
      await client.close();
    }
  } catch (e) {
    if (errors.length < 5) errors.push((e as Error).message);
  }
  slowestMs = Math.max(slowestMs, performance.now() - t0);
}
print({ attempts, successes, slowestMs: Math.round(slowestMs), errors });
