// fd.ts: owns the plain fd operations of the public API: closeFd and ioctl (the in/out buffer form
// VFIO needs). Never closes anything it was not asked to close.
import { raw } from "./binding.js";

/** close(2). Throws NativeError EBADF for an fd that is not open. */
export function closeFd(fd: number): void {
  raw.closeFd(fd);
}

/**
 * ioctl(2). `arg` is an in/out buffer (updated in place), an integer passed by value, or absent (0).
 * Requests that encode a size (_IOR/_IOW/_IOWR) refuse a shorter buffer; for VFIO's _IO requests the
 * caller's struct must be as large as its argsz says. Returns the ioctl's non-negative result.
 */
export function ioctl(fd: number, request: number, arg?: Uint8Array | number): number {
  return raw.ioctl(fd, request, arg);
}
