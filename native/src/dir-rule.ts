// dir-rule.ts: owns the rule for which directories brokerd (and the admin console) may keep files
// and sockets in, as pure functions over stat results: no I/O here (safe-dir.ts does the opening,
// tests inject lstat). Never loosens the rule for convenience: a directory anyone else could
// change is refused, not repaired.
//
// The rule. A directory D may hold our files when
//   - D itself is a directory owned by our uid, with no group or other write bit; and
//   - every directory on the way to D (after symbolic links are resolved) is owned by root or by
//     our uid, and is either unwritable by group and others, or sticky (like /tmp), so nobody else
//     can rename, remove or replace what leads to D.
// A symbolic link on the way is followed only from a directory that passed the rule (so only root
// or we could have made it), and the place it points to must pass the rule in turn.

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_ISVTX = 0o1000;

/** What the rule needs of a stat result (node's fs.Stats has these fields). */
export interface DirStat {
  uid: number;
  gid: number;
  /** st_mode, with the file type bits. */
  mode: number;
}

/** lstat(path): undefined when nothing is there. */
export type Lstat = (path: string) => DirStat | undefined;
export type Readlink = (path: string) => string;

export type DirVerdict =
  | {
      ok: true;
      /** The path with every symbolic link resolved, up to the deepest directory that exists. */
      real: string;
      /** Components under `real` that do not exist yet (the caller may create them). */
      missing: string[];
    }
  | { ok: false; problem: string };

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0");
const isDir = (st: DirStat) => (st.mode & S_IFMT) === S_IFDIR;
const isLink = (st: DirStat) => (st.mode & S_IFMT) === S_IFLNK;

/** Why `path` may not lead to one of our directories ("" when it may). */
export function ancestorProblem(path: string, st: DirStat, uid: number): string {
  if (!isDir(st)) return `${path} is not a directory`;
  if (st.uid !== 0 && st.uid !== uid)
    return (
      `${path} belongs to uid ${st.uid}: a directory on the way must belong to root or to uid ${uid}, ` +
      "or its owner can replace what is under it"
    );
  if ((st.mode & 0o022) !== 0 && (st.mode & S_ISVTX) === 0)
    return (
      `${path} is writable by its group or others (mode ${octal(st.mode)}) and not sticky: anyone who can ` +
      `write it can replace what is under it; chmod go-w ${path}, or choose a directory elsewhere`
    );
  return "";
}

/** Why `path` may not be one of our own directories ("" when it may). */
export function ownProblem(path: string, st: DirStat, uid: number): string {
  if (!isDir(st)) return `${path} is not a directory`;
  if (st.uid !== uid)
    return (
      `${path} belongs to uid ${st.uid}, not to uid ${uid} (this process): someone else made it, so ` +
      `what is in it cannot be trusted; remove it (rm -r ${path}) or choose another directory`
    );
  if ((st.mode & 0o022) !== 0)
    return (
      `${path} is writable by its group or others (mode ${octal(st.mode)}); run chmod go-w ${path}, ` +
      "or choose another directory"
    );
  return "";
}

/** Why `path` may not be one of our files ("" when it may): a regular file of ours nobody else writes. */
export function fileProblem(path: string, st: DirStat, uid: number): string {
  if ((st.mode & S_IFMT) === S_IFLNK)
    return `${path} is a symbolic link; nothing here follows links in its own directories: remove it`;
  if ((st.mode & S_IFMT) !== 0o100000) return `${path} is not a regular file; remove it`;
  if (st.uid !== uid)
    return `${path} belongs to uid ${st.uid}, not to uid ${uid} (this process); remove it (rm ${path})`;
  if ((st.mode & 0o022) !== 0)
    return `${path} is writable by its group or others (mode ${octal(st.mode)}); run chmod go-w ${path}, or remove it`;
  return "";
}

/** Splits an absolute path into its components ("/a//b/" -> ["a", "b"]). */
export function components(path: string): string[] {
  return path.split("/").filter((c) => c !== "" && c !== ".");
}

const join = (dir: string, name: string) => (dir === "/" ? `/${name}` : `${dir}/${name}`);
const parent = (dir: string) => (dir.lastIndexOf("/") <= 0 ? "/" : dir.slice(0, dir.lastIndexOf("/")));

/**
 * Walks the absolute path `path` from "/" with `lstat`, resolving symbolic links (at most
 * `maxLinks`), and judges every directory met by the rule above: the last one (the directory
 * itself) by ownProblem, the others by ancestorProblem. A missing component ends the walk: it
 * and the rest are `missing`, to be created under the deepest existing directory (which then
 * counts as a directory on the way).
 */
export function verifyDir(
  path: string,
  uid: number,
  lstat: Lstat,
  readlink: Readlink,
  maxLinks = 40,
): DirVerdict {
  if (!path.startsWith("/")) return { ok: false, problem: `${path} is not an absolute path` };
  const root = lstat("/");
  if (!root) return { ok: false, problem: "/ does not exist" };
  let real = "/";
  let todo = components(path);
  if (todo.length === 0) {
    const p = ownProblem("/", root, uid);
    return p ? { ok: false, problem: p } : { ok: true, real, missing: [] };
  }
  const rootProblem = ancestorProblem("/", root, uid);
  if (rootProblem) return { ok: false, problem: rootProblem };
  let links = 0;
  while (todo.length > 0) {
    const [name, ...rest] = todo as [string, ...string[]];
    if (name === "..") {
      real = parent(real);
      todo = rest;
      continue;
    }
    const here = join(real, name);
    const st = lstat(here);
    if (!st) {
      if (rest.includes(".."))
        return { ok: false, problem: `${path}: ".." after ${here}, which does not exist` };
      return { ok: true, real, missing: todo };
    }
    if (isLink(st)) {
      if (++links > maxLinks) return { ok: false, problem: `${path}: more than ${maxLinks} symbolic links` };
      const target = readlink(here);
      if (target.startsWith("/")) real = "/";
      todo = [...components(target), ...rest];
      continue;
    }
    real = here;
    todo = rest;
    const problem = todo.length === 0 ? ownProblem(real, st, uid) : ancestorProblem(real, st, uid);
    if (problem) return { ok: false, problem };
  }
  return { ok: true, real, missing: [] };
}

/** A single name inside a verified directory: no "/", not "." or "..", not empty. */
export function plainName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0");
}

/**
 * Whether `inner` (a resolved path) is `outer` or lies under it: what a mount of `outer` would
 * expose. Used to keep brokerd's private places out of the directory workloads mount.
 */
export function within(inner: string, outer: string): boolean {
  if (outer === "/") return true;
  return inner === outer || inner.startsWith(`${outer}/`);
}
