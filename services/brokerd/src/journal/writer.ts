// The journal's only contact with the filesystem: open for append, write, undo a torn tail, ask
// whether the open file still has a name, close. An interface, so tests can make any call fail
// with ENOSPC, EMFILE, EIO or a short write, deterministically. The real one is synchronous on
// purpose: a journal line is on disk (in the page cache) before the event's caller goes on, and
// nothing is ever queued in memory where an attacker could grow it. The real one opens the file
// only inside a verified directory, never through a symbolic link (native/src/safe-dir.ts).
import { closeSync, constants, fstatSync, ftruncateSync, writeSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { openInSafeDir, openSafeDir } from "@vfio-broker/native";

export interface JournalWriter {
  /** Opens `path` for appending (O_APPEND|O_CREAT, mode 0600), returning the fd. Throws errno errors. */
  open(path: string): number;
  /** write(2): the number of bytes written, possibly fewer than asked. Throws errno errors. */
  write(fd: number, data: Uint8Array, offset: number, length: number): number;
  /** The open file's size; used only to take back the bytes of a line that did not fit. */
  size(fd: number): number;
  truncate(fd: number, length: number): void;
  /** false once the open file has no name left (deleted, or its directory removed): lines there are lost. */
  linked(fd: number): boolean;
  close(fd: number): void;
}

/**
 * Opens the journal for appending (created 0600): its directory must pass the directory rule
 * (ours, nobody else can write it or what leads to it), and the file must not be a symbolic link
 * and must be ours, not writable by others. Throws UnsafePlaceError (code EUNSAFE) otherwise. The
 * directory is verified again on every open (brokerd reopens on SIGHUP, after logrotate).
 */
export function openJournalFile(path: string): number {
  const dir = openSafeDir(dirname(resolve(path)), { role: "--journal's directory" });
  try {
    return openInSafeDir(
      dir,
      basename(path),
      constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT,
      0o600,
    );
  } finally {
    dir.close();
  }
}

export const fsWriter: JournalWriter = {
  open: (path) => openJournalFile(path),
  write: (fd, data, offset, length) => writeSync(fd, data, offset, length),
  size: (fd) => fstatSync(fd).size,
  truncate: (fd, length) => ftruncateSync(fd, length),
  linked: (fd) => fstatSync(fd).nlink > 0,
  close: (fd) => closeSync(fd),
};

/** The errno name of a failed call ("ENOSPC"), or the error's name when it has none. */
export function errnoOf(e: unknown): string {
  const code = (e as { code?: unknown })?.code;
  return typeof code === "string" ? code : e instanceof Error ? e.name : "unknown";
}

/** One short line about a failure, for stderr: "ENOSPC: no space left on device, write". */
export function describe(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.length > 200 ? `${m.slice(0, 200)}...` : m;
}
