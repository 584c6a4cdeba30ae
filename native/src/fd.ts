// fd.ts: owns the plain fd operations of the public API: closeFd, dupFd, setCloexec, ioctl (the in/out
// buffer form VFIO needs) and flockExclusive. Never closes anything it was not asked to close.
import { raw } from "./binding.js";

/** close(2). Throws NativeError EBADF for an fd that is not open. */
export function closeFd(fd: number): void {
  raw.closeFd(fd);
}

/**
 * fcntl(F_DUPFD_CLOEXEC, 3): a second fd for the same open file. Holding one keeps the file (e.g. a
 * listening socket and its backlog) alive while another owner closes its fd.
 */
export function dupFd(fd: number): number {
  return raw.dupFd(fd);
}

/** Sets (default) or clears FD_CLOEXEC, e.g. on fds inherited across exec such as systemd's LISTEN_FDS. */
export function setCloexec(fd: number, on = true): void {
  raw.setCloexec(fd, on);
}

/**
 * ioctl(2). `arg` is an in/out buffer (updated in place), an integer passed by value, or absent (0).
 * Requests that encode a size (_IOR/_IOW/_IOWR) refuse a shorter buffer; for VFIO's _IO requests the
 * caller's struct must be as large as its argsz says. Returns the ioctl's non-negative result.
 */
export function ioctl(fd: number, request: number, arg?: Uint8Array | number): number {
  return raw.ioctl(fd, request, arg);
}

/**
 * flock(fd, LOCK_EX | LOCK_NB): true when this process now holds the lock, false when another
 * holder has it. The kernel releases it when the last fd of that open file closes, including when
 * the process is killed, so it never goes stale.
 */
export function flockExclusive(fd: number): boolean {
  return raw.flockExclusive(fd);
}
