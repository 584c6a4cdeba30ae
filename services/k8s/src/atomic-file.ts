// Durable small files: write to a temp name, fsync, rename, fsync the directory; and the check
// that a directory is the agent's own (not a symlink, owned by this uid, no group or other write).
// Owns nothing else: callers decide what goes in the file.
import { closeSync, fsyncSync, lstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";

/** Writes `data` to `path` so that a crash leaves either the old file or the new one, never a mix. */
export function writeFileAtomic(path: string, data: string, mode: number): void {
  const tmp = join(dirname(path), `.${process.pid}.tmp`);
  const fd = openSync(tmp, "w", mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDir(dirname(path));
}

/** Removes `path` if it exists, durably. Returns whether there was a file. */
export function removeFileDurable(path: string): boolean {
  let existed = true;
  try {
    lstatSync(path);
  } catch {
    existed = false;
  }
  rmSync(path, { force: true });
  if (existed) fsyncDir(dirname(path));
  return existed;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Creates `dir` (mode 0700) if absent and refuses it unless it is a real directory owned by this
 * process's uid that neither group nor others can write: nobody else may plant or swap a file there.
 */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory (a symlink is refused)`);
  const uid = process.geteuid?.() ?? st.uid;
  if (st.uid !== uid) throw new Error(`${dir} is owned by uid ${st.uid}, not by this agent (uid ${uid})`);
  if ((st.mode & 0o022) !== 0)
    throw new Error(`${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`);
}
