// binding.ts: owns loading build/Release/vfio_native.node and the typed shape of its raw exports.
// Nothing outside this package imports it: the public API (index.ts) wraps every raw call. If the
// addon is missing it throws an Error that says how to build it.
import { createRequire } from "node:module";
import { NativeError } from "./errors.js";

/** uv_poll readiness bits. */
export const READABLE = 1;
export const WRITABLE = 2;

export interface Poller {
  /** Called on readiness: errno is 0 unless libuv reports an error for the fd. */
  onready: ((errno: number, events: number) => void) | undefined;
  start(events: number): void;
  stop(): void;
  ref(): void;
  unref(): void;
  close(): void;
}

export interface RawBinding {
  setErrorClass(ctor: typeof NativeError): void;
  sendmsg(fd: number, data: Uint8Array | Uint8Array[], fds?: number[]): number;
  recvmsg(
    fd: number,
    buf: Uint8Array,
    offset: number,
    length: number,
    maxFds: number,
    fdsOut: Int32Array,
  ): number;
  socketpair(): [number, number];
  connect(path: string): number;
  listen(path: string, backlog: number, mode: number): number;
  accept(fd: number): number;
  adoptSocket(fd: number): void;
  closeFd(fd: number): void;
  dupFd(fd: number): number;
  setCloexec(fd: number, on: boolean): void;
  peerCred(fd: number): { pid: number; uid: number; gid: number };
  peerPidfd(fd: number): number | null;
  pidfdOpen(pid: number): number;
  pidfdAlive(pidfd: number): boolean;
  pidfdSendSignal(pidfd: number, sig: number): boolean;
  memfdCreate(name: string, size: number | bigint): number;
  mmap(fd: number, offset: number | bigint, length: number, writable: boolean): [unknown, ArrayBuffer];
  munmap(handle: unknown, buffer: ArrayBuffer): boolean;
  ioctl(fd: number, request: number, arg?: Uint8Array | number): number;
  sdNotify(address: string, state: string, fds: number[]): boolean;
  flockExclusive(fd: number): boolean;
  tcpSocketOwner(
    src: Uint8Array,
    srcPort: number,
    dst: Uint8Array,
    dstPort: number,
  ): { uid: number; state: number } | null;
  epollSet(): number;
  epollClose(): void;
  epollControl(op: 1 | 2 | 3, fd: number, events: number): void;
  epollReady(out: Int32Array): number;
  Poller: new (fd: number) => Poller;
  PAGE_SIZE: number;
  MAX_FDS_PER_MESSAGE: number;
}

function load(): RawBinding {
  const require = createRequire(import.meta.url);
  const file = "../build/Release/vfio_native.node";
  try {
    return require(file) as RawBinding;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND") {
      throw new Error(
        `@vfio-broker/native: the native addon is not built (${new URL(file, import.meta.url).pathname} is missing); ` +
          "run `npm run build -w native` (needs g++, make, python3, Node headers)",
        { cause: err },
      );
    }
    throw err;
  }
}

export const raw: RawBinding = load();
raw.setErrorClass(NativeError);
