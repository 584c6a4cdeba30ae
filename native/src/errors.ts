// errors.ts: owns NativeError, the one error type the native layer throws or rejects with. Every
// error carries errno (number), code ('EBADF', or our own 'ECTRUNC' / 'ECLOSED'), the syscall or
// function that failed, and a message that names the object ("sendmsg(fd 12): Bad file descriptor").
import { constants } from "node:os";
import { getSystemErrorMap } from "node:util";

export class NativeError extends Error {
  errno: number;
  code: string;
  syscall: string;

  constructor(message: string, code: string, errno: number, syscall: string) {
    super(message);
    this.name = "NativeError";
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
  }

  /** From a raw errno (as libuv reports it to a poll callback): "uv_poll(fd 12): Connection reset by peer". */
  static fromErrno(errno: number, syscall: string, what: string): NativeError {
    const entry = getSystemErrorMap().get(-errno);
    const code = entry?.[0] ?? `E${errno}`;
    const text = entry?.[1] ?? `error ${errno}`;
    return new NativeError(`${syscall}(${what}): ${text}`, code, errno, syscall);
  }
}

export const ERRNO = constants.errno;

/** The socket was closed by close() (or after a fatal receive error) while this operation waited. */
export function closedError(syscall: string, fd: number, reason?: Error): NativeError {
  const why = reason ? ` after: ${reason.message}` : "";
  return new NativeError(`${syscall}(fd ${fd}): the socket is closed${why}`, "ECLOSED", ERRNO.EBADF, syscall);
}

export function invalid(fn: string, text: string): NativeError {
  return new NativeError(`${fn}: ${text}`, "EINVAL", ERRNO.EINVAL, fn);
}
