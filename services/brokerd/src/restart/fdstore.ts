// fdstore.ts: owns brokerd's side of systemd's file descriptor store. While it runs, brokerd parks
// every fd a client depends on (device, group and container fds, sim BAR memfds, listening sockets)
// with systemd (sd_notify FDSTORE=1 + FDNAME=, the fd by SCM_RIGHTS), so a crash, kill -9 or restart
// closes nothing: systemd holds a copy and passes it back to the next start as LISTEN_FDS (fds
// 3..3+n-1, named by LISTEN_FDNAMES, valid only if LISTEN_PID is our pid). Without this, closing
// the last VFIO device fd resets the device under its users.
//
// The env parsing is pure (parseListenFds) so it can be tested exhaustively; takeListenFds and the
// store calls are the thin I/O over it. Names are the only key systemd keeps (and it may return the
// fds in another order than they were stored), so callers must put everything that identifies an fd
// into its name. Storing the same open file again is harmless: systemd drops the duplicate.
import { NativeError, sdNotify, setCloexec } from "@vfio-broker/native";

export interface NamedFd {
  name: string;
  fd: number;
}

/** SD_LISTEN_FDS_START: systemd passes fds from 3 up. */
export const LISTEN_FDS_START = 3;
/** More than any fd table brokerd runs with; a larger LISTEN_FDS is corrupt, not ours to trust. */
export const MAX_LISTEN_FDS = 65536;
/** systemd's FDNAME_MAX. */
export const MAX_FD_NAME = 255;
/** SCM_MAX_FD: the fds one datagram can carry. */
const FDS_PER_NOTIFY = 253;

const VARS = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] as const;

/**
 * Why `name` cannot be an FDNAME, or undefined if it can. systemd accepts 1..255 printable ASCII
 * characters without ':' (the LISTEN_FDNAMES separator). A newline would also inject a second
 * assignment into the sd_notify message.
 */
export function fdNameProblem(name: string): string | undefined {
  if (typeof name !== "string" || name.length === 0) return "an fd name must be a non-empty string";
  if (name.length > MAX_FD_NAME)
    return `fd name ${JSON.stringify(name.slice(0, 40))}... is ${name.length} characters; systemd allows at most ${MAX_FD_NAME}`;
  if (name.includes(":"))
    return `fd name ${JSON.stringify(name)} contains ':', the LISTEN_FDNAMES separator; encode it (e.g. PCI 0000:03:00.0 as 0000.03.00.0)`;
  if (/[^\x20-\x7e]/.test(name))
    return `fd name ${JSON.stringify(name)} has a control or non-ASCII character; systemd allows printable ASCII only`;
  return undefined;
}

/**
 * The fds systemd passed to process `pid`, from an environment. LISTEN_PID unset or another pid:
 * no fds and no error (they were meant for someone else, e.g. a parent that did not unset them).
 * Anything malformed is an error, with no fds: brokerd must not start with fds it cannot name.
 */
export function parseListenFds(
  env: Record<string, string | undefined>,
  pid: number,
): { fds: NamedFd[]; error?: string } {
  const pidText = env.LISTEN_PID;
  if (pidText === undefined) return { fds: [] };
  if (!/^[0-9]{1,10}$/.test(pidText) || Number(pidText) < 1)
    return { fds: [], error: `LISTEN_PID=${JSON.stringify(pidText)} is not a process id` };
  if (Number(pidText) !== pid) return { fds: [] };
  const countText = env.LISTEN_FDS;
  if (countText === undefined) return { fds: [] };
  if (!/^[0-9]+$/.test(countText))
    return {
      fds: [],
      error: `LISTEN_FDS=${JSON.stringify(countText)} is not a count of fds (a non-negative decimal number)`,
    };
  const count = Number(countText);
  if (count > MAX_LISTEN_FDS)
    return {
      fds: [],
      error: `LISTEN_FDS=${countText} is more than ${MAX_LISTEN_FDS} fds; the environment is corrupt (check FileDescriptorStoreMax= and whoever set LISTEN_FDS)`,
    };
  const namesText = env.LISTEN_FDNAMES;
  const names = namesText === undefined || namesText === "" ? [] : namesText.split(":");
  if (names.length > count)
    return {
      fds: [],
      error: `LISTEN_FDNAMES has ${names.length} names but LISTEN_FDS=${count}; the environment is inconsistent`,
    };
  const fds: NamedFd[] = [];
  for (let i = 0; i < count; i++) fds.push({ name: names[i] || "unknown", fd: LISTEN_FDS_START + i });
  return { fds };
}

/**
 * Takes the fds systemd passed to this process, once: parses process.env, deletes LISTEN_PID,
 * LISTEN_FDS and LISTEN_FDNAMES (so no child inherits them, like sd_listen_fds(1)) and sets
 * FD_CLOEXEC on every fd (they arrive without it and would leak into children; Node's startup sets it
 * on fds 0..15 and the contiguous open ones after, but that is libuv's habit, not a promise). It
 * also proves each fd is open. Throws when the
 * environment is malformed or names an fd that is not open.
 */
export function takeListenFds(): NamedFd[] {
  const { fds, error } = parseListenFds(process.env, process.pid);
  for (const v of VARS) delete process.env[v];
  if (error) throw new Error(`systemd socket/fdstore hand-over: ${error}`);
  for (const { name, fd } of fds) {
    try {
      setCloexec(fd);
    } catch (err) {
      throw new Error(
        `systemd passed LISTEN_FDS=${fds.length}, but fd ${fd} (${name}) is not open: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return fds;
}

/**
 * Parks fds in systemd's fdstore: one FDSTORE=1 message per name with all fds of that name (several
 * if more than 253). Every name is checked before anything is sent. Returns false, sending nothing,
 * when NOTIFY_SOCKET is unset (not under systemd). systemd keeps at most FileDescriptorStoreMax=
 * fds and silently closes the rest, so the unit must allow as many as brokerd can hold.
 */
export function storeFds(fds: readonly NamedFd[]): boolean {
  const byName = new Map<string, number[]>();
  for (const { name, fd } of fds) {
    const problem = fdNameProblem(name);
    if (problem) throw new Error(`storeFds: ${problem}`);
    if (!Number.isInteger(fd) || fd < 0) throw new Error(`storeFds: fd ${fd} (${name}) is not an fd`);
    const list = byName.get(name);
    if (list) list.push(fd);
    else byName.set(name, [fd]);
  }
  if (!process.env.NOTIFY_SOCKET) return false;
  let sent = 0;
  for (const [name, list] of byName) {
    for (let i = 0; i < list.length; i += FDS_PER_NOTIFY) {
      const batch = list.slice(i, i + FDS_PER_NOTIFY);
      notify(`FDSTORE=1\nFDNAME=${name}`, batch, `${sent} of ${fds.length} fds were stored before this`);
      sent += batch.length;
    }
  }
  return true;
}

/** Drops every stored fd named `name` (FDSTOREREMOVE=1). false when NOTIFY_SOCKET is unset. */
export function removeStoredFds(name: string): boolean {
  const problem = fdNameProblem(name);
  if (problem) throw new Error(`removeStoredFds: ${problem}`);
  if (!process.env.NOTIFY_SOCKET) return false;
  notify(`FDSTOREREMOVE=1\nFDNAME=${name}`, [], "nothing was removed");
  return true;
}

/** Pure: what takes the fdstore from `before` to `now`: names to remove, fds to store. */
export function fdStoreChanges(
  before: readonly NamedFd[],
  now: readonly NamedFd[],
): { remove: string[]; store: NamedFd[] } {
  const key = (list: readonly NamedFd[], name: string) =>
    list
      .filter((x) => x.name === name)
      .map((x) => x.fd)
      .join(",");
  const changed = [...new Set([...before, ...now].map((x) => x.name))].filter(
    (n) => key(before, n) !== key(now, n),
  );
  return {
    remove: changed.filter((n) => before.some((x) => x.name === n)),
    store: now.filter((x) => changed.includes(x.name)),
  };
}

/**
 * Brings the fdstore from `before` to `now` (a mode switch opened or closed device fds): names gone
 * or changed are removed, new or changed ones stored. Returns `now`. A no-op without NOTIFY_SOCKET.
 */
export function restoreChangedFds(before: readonly NamedFd[], now: readonly NamedFd[]): NamedFd[] {
  const c = fdStoreChanges(before, now);
  for (const n of c.remove) removeStoredFds(n);
  storeFds(c.store);
  return [...now];
}

const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * sdNotify is non-blocking, and a busy systemd (or a small net.unix.max_dgram_qlen) fills the
 * notify queue: wait briefly and retry rather than lose an fd. Parking happens rarely (when an fd is
 * created), so a blocking millisecond wait is cheaper than making every caller asynchronous.
 */
function notify(state: string, fds: number[], progress: string): void {
  let waited = 0;
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    try {
      sdNotify(state, fds);
      return;
    } catch (err) {
      if (!(err instanceof NativeError) || err.code !== "EAGAIN" || waited >= 2000) {
        const line = state.split("\n")[1];
        throw new Error(`sd_notify(${line}) failed: ${(err as Error).message} (${progress})`, { cause: err });
      }
    }
    Atomics.wait(pause, 0, 0, delay);
    waited += delay;
  }
}
