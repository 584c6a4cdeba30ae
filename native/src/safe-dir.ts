// safe-dir.ts: owns opening a directory that passes dir-rule.ts as a held fd, and reaching names
// in it only through that fd, so what was verified is what is used: files are opened, sockets
// bound and entries removed relative to the directory, never by walking its path again, and the
// last component is never a symbolic link that is followed. Refusals are UnsafePlaceError, whose
// message says what to fix. Never chmods, chowns or creates anything outside the directory asked
// for (and its missing parents).
//
// Node has no openat(2). The directory fd is an O_PATH fd and names in it are reached as
// /proc/self/fd/<fd>/<name>: the kernel resolves /proc/self/fd/<fd> to the directory that fd holds
// (not by its path, which may have changed since), then <name> in it, so this is openat(fd, name)
// for every path-taking call: open (with O_NOFOLLOW), mkdir, unlink, rename, bind(2) for Unix
// sockets (bind never follows a symlink in the last component: an existing name is EADDRINUSE).
// A Unix socket path through /proc/self/fd is also short (Unix socket paths are limited to 107
// bytes). brokerd already needs /proc (peer identities).
import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { ancestorProblem, type DirStat, fileProblem, ownProblem, plainName, verifyDir } from "./dir-rule.js";

/** Linux O_PATH (the same value on x86-64 and arm64); node's fs.constants does not list it. */
const O_PATH = 0o10000000;
/** libuv adds O_CLOEXEC to every open. */
const DIR_FLAGS = O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** A place brokerd (or the console) will not use, and why; the message says what to fix. */
export class UnsafePlaceError extends Error {
  readonly code = "EUNSAFE";
  constructor(message: string) {
    super(message);
    this.name = "UnsafePlaceError";
  }
}

export interface SafeDir {
  /** The path as configured (for messages). */
  readonly path: string;
  /** The path with symbolic links resolved, as verified. */
  readonly real: string;
  /** An O_PATH fd of the directory, held until close(). */
  readonly fd: number;
  /** The directory itself through the fd (/proc/self/fd/<fd>), e.g. for readdir. */
  readonly self: string;
  /** The path that reaches `name` in this directory through the fd: /proc/self/fd/<fd>/<name>. */
  at(name: string): string;
  /** The configured path of `name` (for messages). */
  show(name: string): string;
  close(): void;
}

export interface SafeDirOptions {
  /** What the directory is, for messages: "--private-dir", "the journal's directory", ... */
  role: string;
  /** Create the directory (and missing parents, 0755) if absent, with this mode. Else it must exist. */
  create?: number;
  /** Give the directory exactly this mode (and group, if given) after verifying it: it is ours. */
  mode?: number;
  gid?: number;
}

const euid = () => process.geteuid?.() ?? 0;

function statOf(st: { uid: number; gid: number; mode: number }): DirStat {
  return { uid: st.uid, gid: st.gid, mode: st.mode };
}

function lstatOrNone(path: string): DirStat | undefined {
  const st = lstatSync(path, { throwIfNoEntry: false });
  return st ? statOf(st) : undefined;
}

function fail(role: string, path: string, problem: string): never {
  throw new UnsafePlaceError(`${role} ${path}: ${problem}`);
}

/**
 * Errors that say something about the place (a link, no permission, a read-only or missing
 * directory) become UnsafePlaceError with `say`; the rest (EMFILE, ENOSPC, EIO, ...) are the
 * moment's, not the place's, and are thrown as they are, so callers can count them by errno.
 */
const PLACE_ERRORS = new Set([
  "ELOOP",
  "ENOTDIR",
  "EACCES",
  "EPERM",
  "EROFS",
  "ENOENT",
  "EEXIST",
  "EISDIR",
  "ENXIO",
]);
function placeError(e: unknown, say: () => string): never {
  if (PLACE_ERRORS.has((e as NodeJS.ErrnoException).code ?? "")) throw new UnsafePlaceError(say());
  throw e;
}

/**
 * Opens `path` as a verified directory (see dir-rule.ts), creating it if asked. Every directory
 * from "/" down is opened by fd, one component at a time with O_NOFOLLOW, and judged again from
 * fstat of that fd: a swap between the check and the open is caught, not followed.
 */
export function openSafeDir(path: string, opts: SafeDirOptions): SafeDir {
  const uid = euid();
  const abs = resolve(path);
  let verdict: ReturnType<typeof verifyDir>;
  try {
    verdict = verifyDir(abs, uid, lstatOrNone, (p) => readlinkSync(p));
  } catch (e) {
    fail(opts.role, path, `cannot be checked: ${(e as Error).message}`);
  }
  if (!verdict.ok) fail(opts.role, path, verdict.problem);
  if (verdict.missing.length > 0 && opts.create === undefined)
    fail(opts.role, path, `does not exist; create it (owned by uid ${uid}, not writable by group or others)`);
  const names = verdict.real.split("/").filter(Boolean);
  const all = [...names, ...verdict.missing];
  let fd = openSync("/", DIR_FLAGS);
  let here = "/";
  try {
    for (let i = 0; i < all.length; i++) {
      const name = all[i]!;
      const last = i === all.length - 1;
      const next = join(here, name);
      if (i >= names.length) {
        try {
          mkdirSync(`/proc/self/fd/${fd}/${name}`, { mode: last ? opts.create! : 0o755 });
          chmodSync(`/proc/self/fd/${fd}/${name}`, last ? opts.create! : 0o755);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EEXIST")
            placeError(e, () => `${opts.role} ${path}: cannot create ${next}: ${(e as Error).message}`);
        }
      }
      let child: number;
      try {
        child = openSync(`/proc/self/fd/${fd}/${name}`, DIR_FLAGS);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        placeError(
          e,
          () =>
            `${opts.role} ${path}: ${
              code === "ELOOP" || code === "ENOTDIR"
                ? `${next} changed while it was being checked (now a symbolic link or not a directory)`
                : `cannot open ${next}: ${(e as Error).message}`
            }`,
        );
      }
      closeSync(fd);
      fd = child;
      here = next;
      const st = statOf(fstatSync(fd));
      const problem = last ? ownProblem(here, st, uid) : ancestorProblem(here, st, uid);
      if (problem) fail(opts.role, path, problem);
    }
    if (all.length === 0) {
      const problem = ownProblem("/", statOf(fstatSync(fd)), uid);
      if (problem) fail(opts.role, path, problem);
    }
    if (opts.mode !== undefined || opts.gid !== undefined) {
      const self = `/proc/self/fd/${fd}`;
      const st = fstatSync(fd);
      try {
        if (opts.gid !== undefined && st.gid !== opts.gid) chownSync(self, uid, opts.gid);
        if (opts.mode !== undefined && (st.mode & 0o7777) !== opts.mode) chmodSync(self, opts.mode);
      } catch (e) {
        placeError(
          e,
          () =>
            `${opts.role} ${path}: cannot give it mode ${(opts.mode ?? st.mode & 0o7777).toString(8)}` +
            `${opts.gid !== undefined ? ` and group ${opts.gid}` : ""}: ${(e as Error).message}`,
        );
      }
    }
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  const dirFd = fd;
  let open = true;
  return {
    path,
    real: here,
    fd: dirFd,
    self: `/proc/self/fd/${dirFd}`,
    at(name) {
      if (!plainName(name)) throw new UnsafePlaceError(`${JSON.stringify(name)} is not a plain file name`);
      return `/proc/self/fd/${dirFd}/${name}`;
    },
    show: (name) => join(path, name),
    close() {
      if (!open) return;
      open = false;
      closeSync(dirFd);
    },
  };
}

/**
 * Opens `name` in `dir` with O_NOFOLLOW (a symbolic link there is refused, never followed) and
 * checks what was opened: a regular file owned by this uid that group and others cannot write.
 * flags are fs.constants flags (O_RDWR | O_CREAT | O_APPEND ...); mode applies when it is created.
 */
export function openInSafeDir(dir: SafeDir, name: string, flags: number, mode = 0o600): number {
  let fd: number;
  try {
    fd = openSync(dir.at(name), flags | constants.O_NOFOLLOW, mode);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ELOOP")
      throw new UnsafePlaceError(
        `${dir.show(name)} is a symbolic link; nothing here follows links in its own directories: remove it`,
      );
    if (code === "ENOENT" || code === "EEXIST") throw e;
    placeError(
      e,
      () => `cannot open ${dir.show(name)}: ${(e as Error).message.replace(dir.at(name), dir.show(name))}`,
    );
  }
  const problem = fileProblem(dir.show(name), statOf(fstatSync(fd)), euid());
  if (problem) {
    closeSync(fd);
    throw new UnsafePlaceError(problem);
  }
  return fd;
}

/** Whether `name` in dir is a symbolic link or anything but what `want` says ("" when fine or absent). */
export function entryProblem(dir: SafeDir, name: string, want: "socket" | "file"): string {
  const st = lstatSync(dir.at(name), { throwIfNoEntry: false });
  if (!st) return "";
  if (st.isSymbolicLink())
    return `${dir.show(name)} is a symbolic link; nothing here follows links in its own directories: remove it`;
  if (want === "socket" && !st.isSocket()) return `${dir.show(name)} exists and is not a socket; remove it`;
  if (want === "file" && !st.isFile()) return `${dir.show(name)} exists and is not a regular file; remove it`;
  return "";
}
