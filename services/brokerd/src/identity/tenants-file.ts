// Reads the operator's /etc/subuid and /etc/passwd for identity/subuid.ts: the thin I/O half.
// (Node opens every fd close-on-exec; O_NONBLOCK keeps a FIFO put in its place from blocking.)
// A file that root does not own, that its group or others may write, that is not a regular file
// or is over MAX_FILE_BYTES is ignored with a warning (whoever could write it could move uids
// between tenants). A missing /etc/subuid is normal: every uid is then a tenant of its own. Never
// throws: brokerd keeps serving with the uid-per-tenant map and says why.
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { parsePasswd, parseSubuid, TenantMap } from "./subuid.js";

/** Read at most this much of each file (a large site's /etc/subuid is well under it). */
export const MAX_FILE_BYTES = 4 << 20;

/** The text of path if it is an operator's file; else undefined and why (or "" when absent). */
export function readOperatorFile(path: string): { text?: string; warning: string } {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { warning: code === "ENOENT" ? "" : `${path}: ${code ?? (e as Error).message}; ignored` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { warning: `${path} is not a regular file; ignored` };
    if (st.uid !== 0) return { warning: `${path} is owned by uid ${st.uid}, not root; ignored (chown root)` };
    if ((st.mode & 0o022) !== 0)
      return {
        warning: `${path} is writable by its group or others (mode ${(st.mode & 0o777).toString(8)}); ignored (chmod go-w)`,
      };
    if (st.size > MAX_FILE_BYTES)
      return { warning: `${path} is ${st.size} bytes, over the ${MAX_FILE_BYTES} brokerd reads; ignored` };
    const buf = Buffer.alloc(Math.min(st.size, MAX_FILE_BYTES) + 1);
    let n = 0;
    for (let r = -1; r !== 0 && n < buf.length; n += r) r = readSync(fd, buf, n, buf.length - n, null);
    if (n > MAX_FILE_BYTES)
      return { warning: `${path} grew over ${MAX_FILE_BYTES} bytes while read; ignored` };
    return { text: buf.subarray(0, n).toString("utf8"), warning: "" };
  } catch (e) {
    return { warning: `${path}: ${(e as Error).message}; ignored` };
  } finally {
    closeSync(fd);
  }
}

/** The tenant map from the operator's files, and what was wrong with them (for stderr). */
export function loadTenantMap(
  subuidPath: string,
  passwdPath: string,
): { map: TenantMap; warnings: string[] } {
  const sub = readOperatorFile(subuidPath);
  if (sub.text === undefined) return { map: new TenantMap(), warnings: sub.warning ? [sub.warning] : [] };
  const pw = readOperatorFile(passwdPath);
  const warnings = pw.warning ? [`${pw.warning} (owner names in ${subuidPath} stay unresolved)`] : [];
  const parsed = parseSubuid(sub.text, parsePasswd(pw.text ?? ""));
  return { map: parsed.map, warnings: [...warnings, ...parsed.warnings.map((w) => `${subuidPath}: ${w}`)] };
}
