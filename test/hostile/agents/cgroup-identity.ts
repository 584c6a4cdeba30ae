// Agent for test/hostile/cgroup-identity.test.ts. Started as root, it first does what a cgroup
// manager does for a process it starts (writes its pid into ENTER/cgroup.procs), then drops to UID
// for good (groups, gid, uid), as systemd starts a user's manager inside user@UID.service. What
// follows runs as UID only.
//
//   forge SOCKET ENTER UID SHAPES_JSON   for each [name, relative path]: mkdir ENTER/path, move
//        itself in, Hello, OpenDevice sim1 and CreateMapping BAR4 WC read-write; back to ENTER, and
//        the directories removed. Prints {results: [{name, cgroup, containerId, podUid, open, map}]}.
//   hold SOCKET ENTER UID REL DEVICE REGION COUNT   (REL "" to stay in ENTER) mkdir ENTER/REL and move
//        in, Hello, open DEVICE, CreateMapping 4 KiB pages of REGION (WC read-write) until COUNT or
//        the first refusal; prints {phase: "holding", ...} and holds until SIGTERM, then cleans up.
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Attribute, Layout, Prot } from "@vfio-broker/proto";
import { brokerClient, codeOf, print } from "../../e2e/agents/raw.js";

const [mode, socket, enter, uidArg, ...rest] = process.argv.slice(2);
const uid = Number(uidArg);

/** Moves this process into the cgroup directory dir (as whoever runs it now). */
function moveTo(dir: string): void {
  writeFileSync(join(dir, "cgroup.procs"), `${process.pid}\n`);
}

function ownCgroup(): string {
  return (
    readFileSync("/proc/self/cgroup", "utf8")
      .split("\n")
      .find((l) => l.startsWith("0::"))
      ?.slice(3) ?? ""
  );
}

/** mkdir -p below base, returning what was created (deepest last). */
function mkdirs(base: string, rel: string): string[] {
  const made: string[] = [];
  let dir = base;
  for (const seg of rel.split("/").filter(Boolean)) {
    dir = join(dir, seg);
    try {
      mkdirSync(dir);
      made.push(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
  return made;
}

function removeDirs(made: string[]): void {
  for (const d of [...made].reverse()) {
    try {
      rmdirSync(d);
    } catch {
      /* the test removes what is left, as root */
    }
  }
}

async function attempt(device: string, region: number, pages: number) {
  const rpc = brokerClient(socket!);
  const out = {
    containerId: "",
    podUid: "",
    hello: "OK",
    open: "",
    map: {} as Record<string, number>,
    messages: [] as string[],
  };
  try {
    const hello = await rpc.hello({ clientName: "cgroup-identity" }, { timeoutMs: 10_000 });
    out.containerId = hello.identity?.containerId ?? "";
    out.podUid = hello.identity?.podUid ?? "";
    const df = await rpc.openDevice({ deviceId: device, layout: Layout.COMPACT }).then(
      (r) => {
        out.open = "OK";
        return r;
      },
      (e) => {
        out.open = codeOf(e);
        out.messages.push((e as Error).message.slice(0, 300));
        return undefined;
      },
    );
    for (let i = 0; df && i < pages; i++) {
      try {
        await rpc.createMapping({
          deviceFileId: df.deviceFileId,
          regionIndex: region,
          offset: BigInt(i) * 4096n,
          length: 4096n,
          attribute: Attribute.WC,
          prot: Prot.READ_WRITE,
        });
        out.map.OK = (out.map.OK ?? 0) + 1;
      } catch (e) {
        const code = codeOf(e);
        out.map[code] = (out.map[code] ?? 0) + 1;
        out.messages.push((e as Error).message.slice(0, 300));
        break;
      }
    }
  } catch (e) {
    out.hello = codeOf(e);
    out.messages.push((e as Error).message.slice(0, 300));
  }
  return { rpc, out };
}

// As root: be placed where a cgroup manager would place this process, then become uid for good.
moveTo(enter!);
process.setgroups!([]);
process.setgid!(uid);
process.setuid!(uid);
if (process.getuid!() !== uid || process.geteuid!() !== uid)
  throw new Error("did not drop to the attacker's uid");

if (mode === "forge") {
  const shapes = JSON.parse(rest[0]!) as [string, string][];
  const results = [];
  for (const [name, rel] of shapes) {
    const made = mkdirs(enter!, rel);
    moveTo(join(enter!, rel));
    const cgroup = ownCgroup();
    const { rpc, out } = await attempt("sim1", 4, 1);
    rpc.close();
    moveTo(enter!);
    removeDirs(made);
    results.push({
      name,
      cgroup,
      containerId: out.containerId,
      podUid: out.podUid,
      hello: out.hello,
      open: out.open,
      map: Object.keys(out.map)[0] ?? "",
      message: out.messages[0] ?? "",
    });
  }
  print({ results });
  process.exit(0);
}

if (mode === "hold") {
  const [rel = "", device = "sim0", region = "2", count = "1"] = rest;
  const made = rel ? mkdirs(enter!, rel) : [];
  if (rel) moveTo(join(enter!, rel));
  const cgroup = ownCgroup();
  const stopped = new Promise<void>((resolve) => {
    const alive = setInterval(() => {}, 1000);
    process.once("SIGTERM", () => {
      clearInterval(alive);
      resolve();
    });
  });
  const { rpc, out } = await attempt(device, Number(region), Number(count));
  print({ phase: "holding", cgroup, ...out });
  await stopped;
  rpc.close();
  if (rel) moveTo(enter!);
  removeDirs(made);
  print({ cgroup, ...out });
  process.exit(0);
}
throw new Error(`unknown mode ${mode}`);
