// Agent: `connections` clients in this process, each doing `cycles` map/write/verify/release
// cycles on sim0 BAR2 through the client library. Checks that no live cookie is ever handed out
// twice within a device file, and prints a summary.
import { connect } from "@vfio-broker/client";
import { print } from "./raw.js";

const [socket, connections = "16", cycles = "50", tag = "0"] = process.argv.slice(2);
let duplicates = 0;
let mapped = 0;
let verified = 0;
const errors: string[] = [];
await Promise.all(
  Array.from({ length: Number(connections) }, async (_, i) => {
    const client = await connect({ socket: socket!, clientName: `churn-${tag}-${i}` });
    try {
      const df = await client.open("sim0");
      const live = new Set<bigint>();
      for (let k = 0; k < Number(cycles); k++) {
        // Two live mappings at a time so the allocator has to skip an occupied range.
        const a = await df.map("BAR2", { offset: 0n, length: 4096n, attr: "wc", prot: "rw" });
        const b = await df.map("BAR2", { offset: 4096n, length: 8192n, attr: "wc", prot: "rw" });
        for (const m of [a, b]) {
          if (live.has(m.cookie)) duplicates++;
          live.add(m.cookie);
        }
        mapped += 2;
        const v = (Number(tag) << 24) | (i << 12) | k;
        // Each client owns one 32-bit slot of the shared page: the bytes are really shared.
        const slot = (Number(tag) * Number(connections) + i) * 4;
        a.write32(slot, v);
        if (a.read32(slot) === v) verified++;
        await a.release();
        live.delete(a.cookie);
        await b.release();
        live.delete(b.cookie);
      }
    } catch (e) {
      errors.push((e as Error).message);
    } finally {
      await client.close();
    }
  }),
);
print({ duplicates, mapped, verified, errors });
process.exit(errors.length ? 1 : 0);
