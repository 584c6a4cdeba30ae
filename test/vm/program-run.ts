// VM suite, guest side: runs one of test/vm/programs' C programs (libpciaccess, DPDK) as root or as
// uid 65534 (setpriv, no capabilities, no new privileges), optionally with LD_PRELOAD of the shim,
// and reads its "PREFIX {json}" report lines. The program pauses after mapping until resume() (the
// phase checks PAT meanwhile). It owns the child process only: it never judges a result (the phases
// do) and never talks to brokerd.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";

export type ProgramLine = Record<string, unknown> & { op: string };

/** Where run.sh's `make -C test/vm/programs` put the programs. */
export function programPath(repo: string, name: string): string {
  return join(repo, "test/vm/programs/build", name);
}

export interface RunAs {
  /** 65534 through setpriv, or 0 (this process's root). */
  uid: 0 | 65534;
  /** Added to a minimal environment (PATH, LANG); LD_PRELOAD goes here. */
  env?: Record<string, string>;
}

export class Program {
  readonly proc: ChildProcess;
  private readonly lines: ProgramLine[] = [];
  private waiters: ((l: ProgramLine | undefined) => void)[] = [];
  private out = "";
  private err = "";

  constructor(prefix: string, file: string, args: string[], as: RunAs, log: (m: string) => void) {
    const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8", ...as.env };
    const argv =
      as.uid === 0
        ? [file, ...args]
        : [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            file,
            ...args,
          ];
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], env });
    this.proc.stdout!.on("data", (b: Buffer) => {
      this.out += b.toString();
      for (let i = this.out.indexOf("\n"); i >= 0; i = this.out.indexOf("\n")) {
        const line = this.out.slice(0, i);
        this.out = this.out.slice(i + 1);
        if (!line.startsWith(`${prefix} `)) continue;
        log(`  ${prefix} ${this.proc.pid} (uid ${as.uid}): ${line.slice(prefix.length + 1)}`);
        const v = JSON.parse(line.slice(prefix.length + 1)) as ProgramLine;
        const w = this.waiters.shift();
        if (w) w(v);
        else this.lines.push(v);
      }
    });
    this.proc.stdin!.on("error", () => {}); // EPIPE when the program exited before resume()
    this.proc.stderr!.on("data", (b: Buffer) => {
      this.err = (this.err + b.toString()).slice(-4000);
    });
    this.proc.on("exit", () => {
      for (const w of this.waiters.splice(0)) w(undefined);
    });
  }

  /** The next report line (undefined if the program exited or 120 s passed). */
  next(): Promise<ProgramLine | undefined> {
    const l = this.lines.shift();
    if (l) return Promise.resolve(l);
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(undefined), 120_000);
      this.waiters.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
    });
  }

  /** The program's stderr (its last 4000 characters). */
  stderr(): string {
    return this.err;
  }

  resume(): void {
    this.proc.stdin!.end("next\n");
  }

  exited(): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null)
      return Promise.resolve(this.proc.exitCode);
    return new Promise((r) => this.proc.once("exit", (code) => r(code)));
  }
}
