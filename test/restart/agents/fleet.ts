// Agent: a fleet of N clients (N connections, N sessions) in one process, driven by JSON commands
// on stdin, reporting JSON lines on stdout. Each client holds one mapping of its own page of
// sim0 BAR2 (WC) with a pattern written through its mmap, plus a second device file with one more
// mapping, so every step of the grant handshake can be exercised while brokerd is killed.
// argv: socket N firstPage
import { createInterface } from "node:readline";
import { type BrokerClient, connect, type DeviceFile, type Mapping } from "@vfio-broker/client";

const [socket, nArg = "16", firstArg = "0"] = process.argv.slice(2);
const N = Number(nArg);
const first = Number(firstArg);
const PAGE = 4096;

interface Member {
  c: BrokerClient;
  df: DeviceFile;
  m: Mapping;
  df2: DeviceFile;
  extra: Mapping[];
  resumes: number[];
  revoked: string[];
  lost: string[];
}

const print = (o: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify(o, (_k, v) => (typeof v === "bigint" ? v.toString() : v))}\n`);

const pattern = (page: number) => (page * 2654435761) >>> 0;
const members: Member[] = [];

async function join(i: number): Promise<Member> {
  const page = first + i;
  // Half the members are workload-protocol sessions (the client's default, the even ones), a
  // quarter gRPC sessions granting through CreateMapping + tickets (fdGrants: false), a quarter gRPC
  // sessions granting on the fd channel: the kill lands in every step of each handshake.
  const c = await connect({
    socket,
    clientName: `fleet-${page}`,
    resumeTimeoutMs: 60_000,
    transport: i % 2 === 0 ? "workload" : "grpc",
    fdGrants: i % 4 !== 1,
  });
  const df = await c.open("sim0");
  const m = await df.map("BAR2", { offset: page * PAGE, length: PAGE, attr: "wc" });
  new DataView(m.buffer).setUint32(0, pattern(page), true);
  const df2 = await c.open("sim0");
  const me: Member = { c, df, m, df2, extra: [], resumes: [], revoked: [], lost: [] };
  c.on("resumed", (e) => me.resumes.push(e.downtimeMs));
  c.on("revocation", (e) => me.revoked.push(e.reason));
  c.on("leaseLost", (e) => me.lost.push(e.reason));
  return me;
}

/** Page of BAR2 for the i-th member's extra mappings: far from every fleet's first pages. */
const extraOffset = (i: number, k: number) => (2048 + (first + i) * 8 + k) * PAGE;

async function each(what: string, fn: (m: Member, i: number) => Promise<unknown>): Promise<void> {
  const results = await Promise.allSettled(members.map((m, i) => fn(m, i)));
  const errors = results.flatMap((r, i) =>
    r.status === "rejected" ? [`${i}: ${(r.reason as Error).message}`] : [],
  );
  print({ done: what, errors });
}

const commands: Record<string, () => Promise<void>> = {
  // Each member maps one more page of its second device file: kill brokerd while these run.
  map: () =>
    each("map", async (me, i) => {
      me.extra.push(
        await me.df2.map("BAR2", { offset: extraOffset(i, me.extra.length), length: PAGE, attr: "wc" }),
      );
    }),
  release: () =>
    each("release", async (me) => {
      const m = me.extra.pop();
      if (m) await m.release();
    }),
  // Closing the second device file (and its mappings), then opening a new one.
  close: () =>
    each("close", async (me) => {
      await me.df2.close();
      me.extra = [];
      me.df2 = await me.c.open("sim0");
    }),
  // Nothing to do: brokerd is killed while the leases only keep alive.
  idle: () => each("idle", async () => {}),
  // Every member reads its pattern back through its mmap and through brokerd (ReadRegion).
  verify: () =>
    each("verify", async (me, i) => {
      const page = first + i;
      const mapped = new DataView(me.m.buffer).getUint32(0, true);
      const viaBrokerd = (await me.df.read(me.m.cookie, 4)).readUInt32LE(0);
      if (mapped !== pattern(page) || viaBrokerd !== pattern(page))
        throw new Error(
          `page ${page}: mmap has ${mapped}, brokerd reads ${viaBrokerd}, expected ${pattern(page)}`,
        );
      if (me.m.revoked || me.m.released)
        throw new Error(`page ${page}: the first mapping is gone (${me.m.revokeReason})`);
    }),
  stats: async () => {
    print({
      stats: true,
      resumes: members.flatMap((m) => m.resumes),
      revoked: members.flatMap((m) => m.revoked),
      lost: members.flatMap((m) => m.lost),
      mappings: members.reduce((n, m) => n + 1 + m.extra.length, 0),
    });
  },
  closeAll: () => each("closeAll", (me) => me.c.close()),
  // Every member maps, writes, reads back and releases in a loop until churnStop.
  churnStart: async () => {
    churning = true;
    churn = members.map(async (me, i) => {
      const errors: string[] = [];
      let cycles = 0;
      while (churning) {
        try {
          const m = await me.df2.map("BAR2", { offset: extraOffset(i, 0), length: PAGE, attr: "wc" });
          const v = new DataView(m.buffer);
          v.setUint32(4, cycles, true);
          if (v.getUint32(4, true) !== cycles) throw new Error("read back a different value");
          await m.release();
          cycles++;
        } catch (e) {
          errors.push((e as Error).message);
          if (errors.length > 20) break;
        }
      }
      return { cycles, errors };
    });
    print({ done: "churnStart", errors: [] });
  },
  churnStop: async () => {
    churning = false;
    const r = await Promise.all(churn);
    print({
      done: "churnStop",
      errors: r.flatMap((x) => x.errors),
      cycles: r.reduce((n, x) => n + x.cycles, 0),
    });
  },
};
let churning = false;
let churn: Promise<{ cycles: number; errors: string[] }>[] = [];

try {
  for (let i = 0; i < N; i++) members.push(await join(i));
  print({ ready: true, pid: process.pid, n: N });
} catch (e) {
  print({ ready: false, error: (e as Error).message });
  process.exit(1);
}

const rl = createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on("line", (line) => {
  const cmd = commands[line.trim()];
  if (!cmd) return print({ done: line, errors: [`unknown command ${line}`] });
  chain = chain.then(cmd, cmd);
});
rl.on("close", () => process.exit(0));
