// exec.ts: owns `vfio-broker exec`: it maps a range keeping the backing fd, runs PROGRAM with that fd
// as fd 3 and the mapping described in its environment (execEnv), passes SIGINT/SIGTERM/SIGHUP on to
// it, and returns its exit status. Its process is the mapping's holder for brokerd (the session's
// connection and pidfd), so it stays until PROGRAM exits; cli.ts then closes the client, which
// releases the mapping. It maps the range itself too (the client's Mapping) but never touches it, and
// never says brokerd took back what PROGRAM mapped: no revocation can (docs/security.md section 2.1).
import { spawn } from "node:child_process";
import { constants } from "node:os";
import type { Command } from "./args.js";
import type { BrokerClient } from "./client.js";
import type { Mapping } from "./mapping.js";

type ExecCommand = Extract<Command, { cmd: "exec" }>;

interface Io {
  err(line: string): void;
}

/** The fd number PROGRAM finds the backing on. */
export const EXEC_FD = 3;

/** The signals exec passes on to PROGRAM. */
export const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** What PROGRAM's environment says about its fd (documented in args.ts's HELP and the README). Pure. */
export function execEnv(m: Mapping): Record<string, string> {
  return {
    VFIO_BROKER_FD: String(EXEC_FD),
    VFIO_BROKER_MMAP_OFFSET: m.mmapOffset.toString(),
    VFIO_BROKER_LENGTH: String(m.length),
    VFIO_BROKER_ATTR: m.effectiveAttribute,
    VFIO_BROKER_PROT: m.prot,
    VFIO_BROKER_DEVICE: m.deviceId,
    VFIO_BROKER_REGION: m.regionName,
    VFIO_BROKER_REGION_OFFSET: m.regionOffset.toString(),
    VFIO_BROKER_BACKING: m.backing,
  };
}

/** A child's end as a shell reports it: its exit code, or 128 + N when signal N killed it. Pure. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = signal ? constants.signals[signal] : undefined;
  return n === undefined ? 1 : 128 + n;
}

/** 127 for a program that is not there, 126 for one that cannot be run (as shells say). Pure. */
export function spawnFailureStatus(code: string | undefined): number {
  return code === "ENOENT" ? 127 : 126;
}

/** Runs `vfio-broker exec`; resolves with the exit status. The caller closes `client` afterwards. */
export async function execProgram(client: BrokerClient, cmd: ExecCommand, io: Io): Promise<number> {
  const df = await client.open(cmd.device, { layout: cmd.layout });
  const m = await df.map(df.region(cmd.region), {
    offset: cmd.offset,
    length: cmd.length,
    attr: cmd.attr,
    prot: cmd.prot,
    allowFallback: cmd.allowFallback,
    keepFd: true,
  });
  if (m.fallbackReason)
    io.err(`vfio-broker: mapped ${m.effectiveAttribute}, not ${m.requestedAttribute}: ${m.fallbackReason}`);
  return run(client, m, cmd, io);
}

function run(client: BrokerClient, m: Mapping, cmd: ExecCommand, io: Io): Promise<number> {
  // fd 3 is the backing; 0-2 are exec's own. Every other fd of this process is close-on-exec, so
  // PROGRAM gets none of them (not the session's socket).
  const stdio: ("inherit" | number)[] = ["inherit", "inherit", "inherit", m.fd!];
  const child = spawn(cmd.program, cmd.args, { stdio, env: { ...process.env, ...execEnv(m) } });
  return new Promise((resolve) => {
    let settled = false;
    let signalled = false;
    const forward = (sig: NodeJS.Signals) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    };
    const onRevocation = (ev: { mappings: Mapping[]; reason: string; message: string }) => {
      if (!ev.mappings.includes(m)) return;
      // The client did not release it (keepFd): brokerd holds the pages for this process.
      lost(
        `brokerd revoked the mapping (${ev.reason}${detail(ev.message)})`,
        "; brokerd keeps its pages booked until exec exits",
      );
    };
    const onLeaseLost = (ev: { reason: string }) => lost(`the session with brokerd ended (${ev.reason})`, "");
    const lost = (what: string, pages: string) => {
      const pid = child.pid ?? "?";
      io.err(
        `vfio-broker: ${what}; ${cmd.program} (pid ${pid}) keeps its mmap, which brokerd cannot take back${pages}`,
      );
      if (cmd.onRevoke && !signalled) {
        // Once: a session's end after its revocation is the same loss.
        signalled = true;
        io.err(`vfio-broker: sending ${cmd.onRevoke} to ${cmd.program} (pid ${pid}) (--on-revoke)`);
        forward(cmd.onRevoke);
      }
    };
    const done = (status: number) => {
      if (settled) return;
      settled = true;
      for (const sig of FORWARDED_SIGNALS) process.off(sig, forward);
      client.off("revocation", onRevocation);
      client.off("leaseLost", onLeaseLost);
      resolve(status);
    };
    for (const sig of FORWARDED_SIGNALS) process.on(sig, forward);
    client.on("revocation", onRevocation);
    client.on("leaseLost", onLeaseLost);
    child.on("error", (e: NodeJS.ErrnoException) => {
      // spawn failed (the program is not there, or not executable): nothing ran. (A signal that
      // could not be sent is an error too, with a pid: PROGRAM runs on, and exec waits for it.)
      if (child.pid !== undefined) return;
      const why =
        e.code === "ENOENT"
          ? "not found"
          : e.code === "EACCES"
            ? "permission denied (not executable, or PATH has a directory this user may not search)"
            : e.message;
      io.err(`vfio-broker: cannot run ${cmd.program}: ${why}; the mapping is released`);
      done(spawnFailureStatus(e.code));
    });
    child.once("exit", (code, signal) => done(exitStatus(code, signal)));
  });
}

function detail(message: string): string {
  return message ? `: ${message}` : "";
}
