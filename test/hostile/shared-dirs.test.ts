// Issue 18 row 3: directories another local user can write, turned against brokerd and the console.
// `npm start` as a non-root victim on a directory the attacker made first (with symbolic links to
// the victim's files: a fake ~/.bashrc and ~/.profile in a temp home, and the console's token
// pointed at a sim BAR file whose bytes the attacker writes through brokerd), then each place on
// its own: the journal, the state store, the sim BAR files, the sockets, the token file, a group-
// writable directory, a directory (or a directory on the way) owned by another uid. brokerd and
// the console must refuse (exit 2, saying what to fix) and write nothing through a link.
// Victim uid 4242 (its home and files), attacker uid 65534.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { BROKERD, CLI, REPO, run, SIM_POLICY, tempDir, until } from "../lib/brokerd.js";
import { ATTACKER, report, spawnAs, VICTIM } from "./support/harness.js";

const START = join(REPO, "scripts/start.mjs");
const ADMIN = join(REPO, "services/admin/dist/main.js");
/** What the attacker writes into the sim BAR the victim's token link points at (then spaces: trim()). */
const ATTACKER_TOKEN = "attacker-chosen-token-0123456789";

const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups.reverse())
    try {
      c();
    } catch {
      /* best effort */
    }
});

/** A directory as `uid` would make it (mkdir, chmod): owned by it, with `mode`. */
function dirOf(uid: number, path: string, mode: number): string {
  mkdirSync(path, { recursive: true });
  chownSync(path, uid, uid);
  chmodSync(path, mode);
  return path;
}

/** A symbolic link as `uid` would plant it. */
function plant(uid: number, link: string, target: string): void {
  symlinkSync(target, link);
  lchownSync(link, uid, uid);
}

/** The victim's home: a fake ~/.bashrc and ~/.profile and a private file, all 4242's. */
function victimHome(): { home: string; files: Record<string, string>; changed(): string[] } {
  const home = dirOf(VICTIM, tempDir("vfio-broker-victim-home-"), 0o700);
  cleanups.push(() => rmSync(home, { recursive: true, force: true }));
  const files: Record<string, string> = {
    ".bashrc": "# the victim's bashrc\nalias ll='ls -l'\n",
    ".profile": "# the victim's profile\n",
    secret: "the victim's private file\n",
  };
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(home, name), text, { mode: name === "secret" ? 0o600 : 0o644 });
    chownSync(join(home, name), VICTIM, VICTIM);
  }
  return {
    home,
    files: Object.fromEntries(Object.keys(files).map((n) => [n, join(home, n)])),
    changed: () =>
      Object.entries(files)
        .filter(([n, text]) => readFileSync(join(home, n), "utf8") !== text)
        .map(([n]) => n),
  };
}

/** Output of a child so far, and its exit. */
function collect(child: ChildProcess): { out(): string; exited: Promise<number | null> } {
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  return { out: () => out, exited: new Promise((r) => child.once("exit", (code) => r(code))) };
}

/**
 * Runs a program until it says it is ready (`readyCount` "ready" events) or exits; then stops it.
 * Returns its exit code ("started" if it had to be stopped) and its last line of output.
 */
async function attempt(
  cmd: string[],
  opts: {
    uid?: number;
    env?: NodeJS.ProcessEnv;
    readyCount?: number;
    /** Runs once it is ready, before it is stopped. */
    onReady?: (out: string) => Promise<void>;
  } = {},
): Promise<{ code: number | "started"; said: string; out: string }> {
  const child = spawn(process.execPath, cmd, {
    stdio: ["ignore", "pipe", "pipe"],
    env: opts.env ?? process.env,
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
  });
  const c = collect(child);
  let exited: number | null | undefined;
  void c.exited.then((code) => {
    exited = code;
  });
  await until(
    "it to be ready or to exit",
    () => exited !== undefined || (c.out().match(/"event":"ready"/g) ?? []).length >= (opts.readyCount ?? 1),
    30_000,
  );
  const started = exited === undefined;
  if (started) await opts.onReady?.(c.out());
  if (started) {
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 5000);
    await c.exited;
    clearTimeout(t);
  }
  const lines = c
    .out()
    .trim()
    .split("\n")
    .filter((l) => !l.startsWith("{"));
  return { code: started ? "started" : (exited ?? -1), said: lines.at(-1) ?? "", out: c.out() };
}

const policyCopy = (dir: string) => {
  const p = join(dir, "policy.yaml");
  writeFileSync(p, readFileSync(SIM_POLICY), { mode: 0o644 });
  return p;
};

describe("hostile: shared directories turned against brokerd (row 3)", () => {
  it("npm start as a non-root victim on a directory the attacker made first, with links to the victim's files", {
    timeout: 240_000,
  }, async () => {
    const v = victimHome();
    // The predictable name, made first by the attacker (0777), with its links in place for both
    // layouts: the old one (DIR/state/...) and the split one (DIR.private/...).
    const D = dirOf(ATTACKER, `/tmp/vfio-broker-row3-${process.pid}`, 0o777);
    cleanups.push(() => rmSync(D, { recursive: true, force: true }));
    for (const [dir, sim] of [
      [join(D, "state"), join(D, "brokerd-state", "sim", "sim1.BAR0")],
      [dirOf(ATTACKER, `${D}.private`, 0o777), join(`${D}.private`, "state", "sim", "sim1.BAR0")],
    ] as const) {
      dirOf(ATTACKER, dir, 0o777);
      plant(ATTACKER, join(dir, "journal.jsonl"), v.files[".bashrc"]!);
      plant(ATTACKER, join(dir, "policy.yaml"), v.files[".profile"]!);
      plant(ATTACKER, join(dir, "admin-token"), sim);
    }
    cleanups.push(() => rmSync(`${D}.private`, { recursive: true, force: true }));
    const env = {
      PATH: process.env.PATH,
      HOME: v.home,
      VFIO_BROKER_RUNTIME_DIR: D,
      VFIO_BROKER_METRICS: "127.0.0.1:0",
      VFIO_BROKER_CONSOLE: "127.0.0.1:0",
    };
    const figures: Record<string, unknown> = {};
    const startVictim = () => {
      const child = spawn(process.execPath, [START], {
        uid: VICTIM,
        gid: VICTIM,
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      const c = collect(child);
      let code: number | null | undefined;
      void c.exited.then((x) => {
        code = x;
      });
      return {
        ...c,
        code: () => code,
        ready: () =>
          until(
            "npm start to be ready (brokerd and the console) or to exit",
            () => code !== undefined || (c.out().match(/"event":"ready"/g) ?? []).length >= 2,
            30_000,
          ),
        async stop() {
          if (code === undefined) child.kill("SIGTERM");
          await c.exited;
        },
      };
    };
    const first = startVictim();
    await first.ready();
    figures.firstStart = first.code() ?? "started";
    if (first.code() === undefined) {
      // The attacker writes its token into sim1 BAR0 through brokerd (any local uid may map sim*),
      // the file the victim's admin-token link points at; spaces after it, which trim() removes.
      const bytes = Buffer.alloc(16 * 1024, " ");
      bytes.write(ATTACKER_TOKEN);
      const wrote = await run(
        process.execPath,
        [
          CLI,
          "map",
          "sim1",
          "BAR0",
          "--length",
          "16K",
          "--write",
          `0x0=${bytes.toString("hex")}`,
          "--socket",
          join(D, "broker.sock"),
        ],
        { uid: ATTACKER },
      );
      figures.attackerWroteBar = wrote.code === 0;
      // The attacker swaps broker.sock for a listener of its own; the victim's CLI comes to it.
      const swap = spawnAs(ATTACKER, [
        "-e",
        `const net=require("net"),fs=require("fs");const d=process.argv[1];process.umask(0);
         fs.renameSync(d+"/broker.sock",d+"/real.sock");let c=0,b=0;
         net.createServer(k=>{c++;k.on("data",x=>{b+=x.length});k.on("error",()=>{})}).listen(d+"/broker.sock",()=>console.log("listening"));
         setTimeout(()=>{console.log(JSON.stringify({connections:c,bytes:b}));process.exit(0)},4000);`,
        D,
      ]);
      await until(
        "the attacker's listener",
        () => swap.out().includes("listening") || swap.child.exitCode !== null,
        10_000,
      );
      await run(process.execPath, [CLI, "devices", "--socket", join(D, "broker.sock")], {
        uid: VICTIM,
        env,
        timeoutMs: 3000,
      });
      await swap.exited;
      const captured = JSON.parse(swap.out().trim().split("\n").at(-1) ?? "{}");
      figures.victimCliConnectionsCaptured = captured.connections;
      figures.victimCliBytesCaptured = captured.bytes;
    }
    await first.stop();
    if (first.code() !== 2 && existsSync(join(D, "real.sock")))
      rmSync(join(D, "broker.sock"), { force: true });
    // The second start reads the token through the link: the BAR bytes the attacker wrote.
    if (figures.firstStart === "started") {
      const second = startVictim();
      await second.ready();
      const url = /"url":"(http:[^"]+)"/.exec(second.out())?.[1];
      // 401: refused; 503: taken, brokerd not reached yet; 200: taken, and the devices listed.
      if (url)
        figures.attackerTokenStatus = await until(
          "the console to reach brokerd",
          async () => {
            const r = await fetch(`${url}api/v1/devices`, {
              headers: { authorization: `Bearer ${ATTACKER_TOKEN}` },
            });
            return r.status === 503 ? undefined : r.status;
          },
          10_000,
          200,
        ).catch(() => 503);
      figures.secondStartBrokerd = second
        .out()
        .split("\n")
        .filter((l) => l.startsWith("vfio-brokerd:") || l.startsWith("start:"))
        .slice(-2);
      await second.stop();
    }
    figures.victimFilesChanged = v.changed();
    figures.bashrcBytesAdded =
      readFileSync(v.files[".bashrc"]!).length - "# the victim's bashrc\nalias ll='ls -l'\n".length;
    figures.said = first
      .out()
      .split("\n")
      .find((l) => l.includes("refusing"));
    report("npm start on a pre-made directory", figures);
    assert.equal(figures.firstStart, 2, `npm start must refuse the attacker's directory:\n${first.out()}`);
    assert.match(first.out(), /refusing to start: .*belongs to uid 65534.*remove it/);
    assert.deepEqual(v.changed(), [], "nothing was written through a link");
    assert.deepEqual(readdirSync(D).sort(), ["state"], "nothing of brokerd's was made in it");

    // The non-root default needs no name: $XDG_RUNTIME_DIR/vfio-broker, else /tmp/vfio-broker-<uid>,
    // which the attacker cannot take over either: made first, it is refused.
    const own = `/tmp/vfio-broker-${VICTIM}`;
    rmSync(own, { recursive: true, force: true });
    dirOf(ATTACKER, own, 0o777);
    cleanups.push(() => rmSync(own, { recursive: true, force: true }));
    const { VFIO_BROKER_RUNTIME_DIR: _, ...noDir } = env;
    const byDefault = await attempt([START], { uid: VICTIM, env: noDir, readyCount: 2 });
    report("npm start's default directory pre-made", { code: byDefault.code, said: byDefault.said });
    assert.equal(byDefault.code, 2, byDefault.out);
    assert.match(byDefault.out, new RegExp(`${own}.*belongs to uid 65534`));
    // Once it is the victim's own (0711: others may reach run/broker.sock, nothing else), it runs.
    rmSync(own, { recursive: true, force: true });
    // and its console works with its own token (brokerd admits its own uid on admin.sock).
    let consoleStatus: number | undefined;
    const mine = await attempt([START], {
      uid: VICTIM,
      env: noDir,
      readyCount: 2,
      onReady: async (out) => {
        const url = /"url":"(http:[^"]+)"/.exec(out)?.[1];
        const token = readFileSync(join(own, "private", "admin-token"), "utf8").trim();
        consoleStatus = await until(
          "the console to reach brokerd",
          async () => {
            const r = await fetch(`${url}api/v1/devices`, { headers: { authorization: `Bearer ${token}` } });
            return r.status === 503 ? undefined : r.status;
          },
          15_000,
          200,
        ).catch(() => 503);
      },
    });
    assert.equal(mine.code, "started", mine.out);
    assert.equal(consoleStatus, 200, mine.out);
    assert.deepEqual(readdirSync(join(own, "run")).sort(), ["broker.sock", "fd.sock"]);
    assert.deepEqual(v.changed(), []);
  });

  it("brokerd: each place another uid could change is refused (exit 2, what to fix); nothing is written through a link", {
    timeout: 240_000,
  }, async () => {
    const v = victimHome();
    const secret = v.files.secret!;
    const cases: { name: string; args: (t: string) => string[]; refused: RegExp }[] = [
      {
        name: "the journal is a link to the victim's file",
        args: (t) => {
          plant(0, join(t, "journal.jsonl"), v.files[".bashrc"]!);
          return ["--journal", join(t, "journal.jsonl")];
        },
        refused: /journal\.jsonl is a symbolic link/,
      },
      {
        name: "the journal's directory is group-writable",
        args: (t) => ["--journal", join(dirOf(0, join(t, "log"), 0o775), "journal.jsonl")],
        refused: /log is writable by its group or others \(mode 0775\)/,
      },
      {
        name: "the journal's directory belongs to another uid",
        args: (t) => ["--journal", join(dirOf(ATTACKER, join(t, "log"), 0o755), "journal.jsonl")],
        refused: /log belongs to uid 65534/,
      },
      {
        name: "the runtime dir was made by another uid",
        args: (t) => ["--runtime-dir", dirOf(ATTACKER, join(t, "shared"), 0o777)],
        refused: /shared belongs to uid 65534/,
      },
      {
        name: "a directory on the way belongs to another uid",
        args: (t) => ["--runtime-dir", join(dirOf(ATTACKER, join(t, "a"), 0o755), "run")],
        refused: /a belongs to uid 65534: a directory on the way/,
      },
      {
        name: "the state dir's parent is writable by others",
        args: (t) => ["--state-dir", join(dirOf(0, join(t, "open"), 0o777), "state")],
        refused: /open is writable by its group or others \(mode 0777\) and not sticky/,
      },
      {
        name: "the state dir is a link to the attacker's directory",
        args: (t) => {
          plant(0, join(t, "st"), dirOf(ATTACKER, join(t, "attacker"), 0o777));
          return ["--state-dir", join(t, "st")];
        },
        refused: /attacker belongs to uid 65534/,
      },
      {
        name: "the state log is a link to the victim's file",
        args: (t) => {
          dirOf(0, join(t, "st"), 0o700);
          plant(0, join(t, "st", "state.0.log"), secret);
          return ["--state-dir", join(t, "st")];
        },
        refused: /state\.0\.log is a symbolic link/,
      },
      {
        name: "a sim BAR file is a link to the victim's file",
        args: (t) => {
          dirOf(0, join(t, "st", "sim"), 0o700);
          plant(0, join(t, "st", "sim", "sim0.BAR0"), secret);
          return ["--state-dir", join(t, "st")];
        },
        refused: /sim0\.BAR0 is a symbolic link/,
      },
      {
        name: "broker.sock is a link to the victim's file",
        args: (t) => {
          dirOf(0, join(t, "run"), 0o755);
          plant(0, join(t, "run", "broker.sock"), secret);
          return ["--runtime-dir", join(t, "run")];
        },
        refused: /broker\.sock is a symbolic link/,
      },
      {
        name: "the admin socket is in the workload dir",
        args: (t) => ["--runtime-dir", join(t, "run"), "--admin-socket", join(t, "run", "admin.sock")],
        refused: /--admin-socket .* is inside --workload-dir/,
      },
    ];
    const results: Record<string, unknown>[] = [];
    const full: string[] = [];
    for (const c of cases) {
      const t = tempDir("vfio-broker-shared-");
      cleanups.push(() => rmSync(t, { recursive: true, force: true }));
      cleanups.push(() => rmSync(join(t, "run.private"), { recursive: true, force: true }));
      const policy = policyCopy(t);
      const before = v.changed();
      const args = c.args(t);
      const base = args.includes("--runtime-dir") ? [] : ["--runtime-dir", join(t, "run")];
      const r = await attempt([BROKERD, ...base, "--policy", policy, "--metrics", "off", ...args]);
      full.push(r.said);
      results.push({
        case: c.name,
        code: r.code,
        said: r.said.slice(0, 160),
        victimChanged: v.changed().filter((f) => !before.includes(f)),
      });
    }
    report("brokerd's places", { results });
    for (const [i, c] of cases.entries()) {
      const r = results[i]!;
      assert.notEqual(r.code, "started", `${c.name}: brokerd must refuse`);
      assert.match(String(full[i]), c.refused, `${c.name}: ${full[i]}`);
    }
    assert.deepEqual(v.changed(), [], "nothing was written through a link");
    assert.deepEqual(
      results.filter((r) => r.code !== 2).map((r) => r.case),
      [],
      "exit 2 (a configuration to fix) for every unsafe place",
    );
  });

  it("the console: a token file that is a link, someone else's, open to others, or in another uid's directory is refused", {
    timeout: 120_000,
  }, async () => {
    const v = victimHome();
    const cases: { name: string; file: (t: string) => string; refused: RegExp }[] = [
      {
        name: "the token file is a link to a file whose bytes the attacker chose",
        file: (t) => {
          // Stands for the sim BAR file of the npm start case: the victim's, 0600, attacker's bytes.
          writeFileSync(join(t, "bar"), `${ATTACKER_TOKEN}\n`, { mode: 0o600 });
          plant(0, join(t, "admin-token"), join(t, "bar"));
          return join(t, "admin-token");
        },
        refused: /admin-token is a symbolic link/,
      },
      {
        name: "the token file belongs to the attacker",
        file: (t) => {
          writeFileSync(join(t, "admin-token"), `${ATTACKER_TOKEN}\n`, { mode: 0o600 });
          chownSync(join(t, "admin-token"), ATTACKER, ATTACKER);
          return join(t, "admin-token");
        },
        refused: /admin-token belongs to uid 65534/,
      },
      {
        name: "the token's directory belongs to the attacker",
        file: (t) => join(dirOf(ATTACKER, join(t, "shared"), 0o777), "admin-token"),
        refused: /shared belongs to uid 65534/,
      },
      {
        name: "the token file is readable by others",
        file: (t) => {
          writeFileSync(join(t, "admin-token"), `${ATTACKER_TOKEN}\n`, { mode: 0o644 });
          return join(t, "admin-token");
        },
        refused: /open to others|readable by others/,
      },
    ];
    const results: Record<string, unknown>[] = [];
    const full: string[] = [];
    for (const c of cases) {
      const t = tempDir("vfio-broker-token-");
      cleanups.push(() => rmSync(t, { recursive: true, force: true }));
      const file = c.file(t);
      // Started anyway (the code before): does it take the attacker's token? (401: no; 503: yes,
      // and it would act for the attacker once brokerd answers.)
      let attackerTokenStatus: number | undefined;
      const r = await attempt(
        [
          ADMIN,
          "--token-file",
          file,
          "--listen",
          "127.0.0.1:0",
          "--admin-socket",
          join(t, "no-brokerd.sock"),
        ],
        {
          onReady: async (out) => {
            const url = /"url":"(http:[^"]+)"/.exec(out)?.[1];
            if (url)
              attackerTokenStatus = (
                await fetch(`${url}api/v1/devices`, {
                  headers: { authorization: `Bearer ${ATTACKER_TOKEN}` },
                })
              ).status;
          },
        },
      );
      full.push(r.said);
      results.push({ case: c.name, code: r.code, said: r.said.slice(0, 160), attackerTokenStatus });
    }
    report("the console's token file", { results });
    for (const [i, c] of cases.entries()) {
      const r = results[i]!;
      assert.equal(r.code, 2, `${c.name}: the console must refuse: ${r.said}`);
      assert.match(String(full[i]), c.refused, `${c.name}: ${full[i]}`);
    }
    assert.deepEqual(v.changed(), []);
  });
});
