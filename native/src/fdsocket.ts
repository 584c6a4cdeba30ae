// fdsocket.ts: owns the fd channel transport: FdSocket (a connected Unix STREAM socket that sends
// and receives length-prefixed frames, each with the fds that travelled with it) and FdServer.
// Readiness comes from the event loop, never the threadpool: a socket waits in the thread's one
// epoll set (readiness.ts), armed only while a recv() or send() waits (or since its last read) and
// holding a ref exactly while one waits, so idle sockets cost an epoll entry and never keep the
// process alive. Fds are never leaked: undelivered fds are closed on close(), and any receive error
// (truncated control data, too many fds, oversize frame, fds mid-frame, EOF mid-frame) closes every
// fd received so far AND closes the socket, whose stream position is lost: it is unusable for
// further frames and later calls reject with ECLOSED (or, with keepOpenOnError, it stays open for
// send() only, so a server can say why before it closes).
import { existsSync, lstatSync, unlinkSync } from "node:fs";
import { type Poller, READABLE, raw, WRITABLE } from "./binding.js";
import { closedError, ERRNO, invalid, NativeError } from "./errors.js";
import { FrameReader, HEADER_BYTES } from "./frames.js";
import { type PeerIdentity, peerIdentity } from "./identity.js";
import { onReady, readiness, type Watcher } from "./readiness.js";

export const MAX_FDS_PER_MESSAGE = 253 as const;

/**
 * What send() returns for a frame that went into the kernel whole within the call: one settled
 * promise shared by all such sends (none made per frame), so a caller can tell it from a frame
 * still pending or refused without waiting on it.
 */
export const SENT: Promise<void> = Promise.resolve();

/** ioctl SIOCOUTQ (= TIOCOUTQ): on an AF_UNIX stream socket, what this end sent and the peer has not read. */
const SIOCOUTQ = 0x5411;
const outqBuf = new Int32Array(1);
/**
 * recvmsg's fd output, shared by every socket: it is read back right after the synchronous call
 * that fills it (a buffer per socket was 1 KiB of every idle connection).
 */
const fdsOut = new Int32Array(MAX_FDS_PER_MESSAGE + 1);

export interface FdMessage {
  data: Buffer;
  /** The receiver owns these and must close them. */
  fds: number[];
}

export interface RecvLimits {
  maxBytes: number;
  maxFds: number;
  /**
   * On a receive error, keep the socket open for send() (so a server can answer "bad request"
   * before it closes): every fd received so far is still closed, and this and every later recv()
   * reject with the error. The caller must close() the socket. Default false: close at once.
   */
  keepOpenOnError: boolean;
}

export const DEFAULT_RECV_LIMITS: Readonly<RecvLimits> = {
  maxBytes: 64 * 1024,
  maxFds: MAX_FDS_PER_MESSAGE,
  keepOpenOnError: false,
};

/**
 * What receive() delivers to: the next frame (msg null at orderly EOF), or the error recv() would
 * reject with (err set, msg null). Called once per receive(), from the event loop or from the
 * receive() call itself once the socket's state is settled, never in the middle of a read.
 */
export interface FrameReceiver {
  onFrame(err: Error | null, msg: FdMessage | null): void;
}

interface PendingRecv {
  limits: RecvLimits;
  resolve(m: FdMessage | null): void;
  reject(e: Error): void;
}

interface PendingSend {
  bytes: Buffer;
  offset: number;
  fds: number[]; // private dups, closed once sent (or on failure)
  resolve(): void;
  reject(e: Error): void;
}

/**
 * Where send() builds a small frame (header and data) for its one sendmsg: used only within the
 * synchronous call, so one is shared by every socket (the slow path copies what it keeps).
 */
const SEND_SCRATCH = 4096;
const sendScratch = Buffer.allocUnsafeSlow(SEND_SCRATCH);

function header(length: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h.writeUInt32BE(length, 0);
  return h;
}

/**
 * The empty queue every socket starts with (two empty arrays were 64 bytes of every idle socket).
 * Only ever read, spliced to nothing or replaced: a first entry makes a socket its own array.
 */
const NONE: never[] = [];

function closeQuietly(fds: Iterable<number>): void {
  for (const fd of fds) {
    try {
      raw.closeFd(fd);
    } catch {
      // already closed: nothing leaks
    }
  }
}

/**
 * A sendmsg error that refused the message's fds before any byte of it was queued, leaving the
 * stream as it was: ETOOMANYREFS (the sender's uid has more fds in flight than its RLIMIT_NOFILE
 * and no CAP_SYS_RESOURCE / CAP_SYS_ADMIN). send() rejects with it and the socket stays usable,
 * so the caller may still send another frame (say, a reply without the fds).
 */
export function frameNotSent(err: unknown): boolean {
  return (err as NativeError | undefined)?.code === "ETOOMANYREFS";
}

function busy(fd: number): NativeError {
  return new NativeError(
    `recv(fd ${fd}): a receive() is pending; one reader at a time`,
    "EBUSY",
    ERRNO.EBUSY,
    "recv",
  );
}

function checkLimits(limits: Partial<RecvLimits> | undefined): RecvLimits {
  // A frozen, complete limits object is kept as it is (a server reading many connections passes
  // one: no copy held by every pending recv).
  const whole =
    limits !== undefined &&
    Object.isFrozen(limits) &&
    "maxBytes" in limits &&
    "maxFds" in limits &&
    "keepOpenOnError" in limits;
  const l = whole ? (limits as RecvLimits) : { ...DEFAULT_RECV_LIMITS, ...limits };
  if (!Number.isSafeInteger(l.maxBytes) || l.maxBytes < 0 || l.maxBytes > 0xffffffff)
    throw invalid("recv", `maxBytes must be an integer in [0, 2^32-1], got ${l.maxBytes}`);
  if (!Number.isInteger(l.maxFds) || l.maxFds < 0 || l.maxFds > MAX_FDS_PER_MESSAGE)
    throw invalid("recv", `maxFds must be an integer in [0, ${MAX_FDS_PER_MESSAGE}], got ${l.maxFds}`);
  return l;
}

export class FdSocket implements Watcher {
  readonly fd: number;
  /** What is pending on readiness (a ref on the thread's readiness while not 0). */
  #events = 0;
  /** What the fd is watched for in the readiness set; may be READABLE while #events is 0. */
  #armed = 0;
  /** recvmsg said EAGAIN and no readiness was reported since (valid while armed for reading). */
  #drained = false;
  /** Made for a read and kept only while a frame is partial: an idle socket holds none. */
  #reader: FrameReader | null = null;
  /** Pending recv()s; the shared NONE while there are none (never pushed to: see recv()). */
  #recvs: PendingRecv[] = NONE;
  /** A pending receive(): its receiver and limits (no promise, no object per read). */
  #rx: FrameReceiver | null = null;
  #rxLimits: RecvLimits = DEFAULT_RECV_LIMITS;
  /** Frames not entirely sent; the shared NONE while there are none (never pushed to: see send()). */
  #sends: PendingSend[] = NONE;
  #closed = false;
  #closeReason: Error | undefined;
  #eof = false;
  #sendError: Error | null = null;
  /** The receive side failed and the caller asked to keep the socket for sending. */
  #recvError: Error | null = null;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Non-blocking connect; retries while the listener's backlog is full (up to 10 s). */
  static connect(path: string): Promise<FdSocket> {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + 10_000;
      let delay = 1;
      const attempt = (): void => {
        let fd: number;
        try {
          fd = raw.connect(path);
        } catch (err) {
          reject(err);
          return;
        }
        if (fd >= 0) {
          resolve(new FdSocket(fd));
          return;
        }
        if (Date.now() > deadline) {
          reject(
            new NativeError(
              `connect(${path}): the listener's backlog stayed full for 10 s`,
              "EAGAIN",
              ERRNO.EAGAIN,
              "connect",
            ),
          );
          return;
        }
        setTimeout(attempt, delay);
        delay = Math.min(delay * 2, 100);
      };
      attempt();
    });
  }

  /** socketpair(AF_UNIX, SOCK_STREAM): two connected sockets (tests, in-process channels). */
  static pair(): [FdSocket, FdSocket] {
    const [a, b] = raw.socketpair();
    return [new FdSocket(a), new FdSocket(b)];
  }

  /** Takes ownership of a connected AF_UNIX SOCK_STREAM socket fd (made non-blocking, close-on-exec). */
  static adopt(fd: number): FdSocket {
    raw.adoptSocket(fd);
    return new FdSocket(fd);
  }

  /** @internal FdServer hands over accept4()ed fds, already non-blocking and close-on-exec. */
  static fromAccepted(fd: number): FdSocket {
    return new FdSocket(fd);
  }

  /** The peer as the kernel knows it (see identity.ts); the caller closes identity.pidfd. */
  peerIdentity(): PeerIdentity {
    if (this.#closed) throw closedError("peerIdentity", this.fd, this.#closeReason);
    return peerIdentity(this.fd);
  }

  /**
   * Sends one frame (4-byte big-endian length + data) with one sendmsg carrying all fds. Resolves
   * when every byte is in the kernel. The fds are not closed (the kernel passes copies) and both data
   * and fds may be reused or closed as soon as send() returns. A rejection for which
   * frameNotSent() holds (ETOOMANYREFS) sent nothing of this frame and leaves the socket usable.
   * A frame that went out whole within the call gets SENT itself.
   */
  send(data: Uint8Array, fds: number[] = []): Promise<void> {
    if (this.#closed) return Promise.reject(closedError("send", this.fd, this.#closeReason));
    if (this.#sendError) return Promise.reject(this.#sendError);
    if (!(data instanceof Uint8Array)) return Promise.reject(invalid("send", "data must be a Uint8Array"));
    if (data.length > 0xffffffff)
      return Promise.reject(invalid("send", "a frame holds at most 2^32-1 bytes"));
    if (!Array.isArray(fds)) return Promise.reject(invalid("send", "fds must be an array"));
    if (fds.length > MAX_FDS_PER_MESSAGE)
      return Promise.reject(
        invalid(
          "send",
          `at most ${MAX_FDS_PER_MESSAGE} fds fit in one message (SCM_MAX_FD), got ${fds.length}`,
        ),
      );
    const total = HEADER_BYTES + data.length;
    // A small frame goes out as one buffer: the shared scratch, header and data copied in (no
    // header buffer and no array of two per send); a large one as its header and data.
    let frame: Buffer | Uint8Array[];
    if (total <= SEND_SCRATCH) {
      sendScratch.writeUInt32BE(data.length, 0);
      sendScratch.set(data, HEADER_BYTES);
      frame = sendScratch.subarray(0, total);
    } else frame = [header(data.length), data];
    let sent = -1;
    if (this.#sends.length === 0) {
      try {
        sent = raw.sendmsg(this.fd, frame, fds);
      } catch (err) {
        return Promise.reject(err);
      }
      if (sent === total) return SENT;
    }
    // Slow path: keep a private copy of the rest of the frame and, if the fds have not gone yet,
    // private dups of them, so the caller's buffers and fds are free as soon as we return.
    const bytes = Array.isArray(frame) ? Buffer.concat(frame) : Buffer.from(frame);
    let dups: number[] = [];
    if (sent <= 0) {
      try {
        for (const fd of fds) dups.push(raw.dupFd(fd));
      } catch (err) {
        closeQuietly(dups);
        return Promise.reject(err);
      }
    } else {
      dups = [];
    }
    return new Promise<void>((resolve, reject) => {
      const p = { bytes, offset: Math.max(sent, 0), fds: dups, resolve, reject };
      if (this.#sends.length === 0) this.#sends = [p];
      else this.#sends.push(p);
      this.#update();
    });
  }

  /**
   * Bytes of kernel memory (skb truesize, never less than the bytes themselves) holding what this
   * end sent and the peer has not read yet (ioctl SIOCOUTQ); 0 once the peer read everything or
   * closed its end. The fds that travelled with those bytes are still in flight.
   */
  unreadBytes(): number {
    if (this.#closed) return 0;
    raw.ioctl(this.fd, SIOCOUTQ, new Uint8Array(outqBuf.buffer));
    return outqBuf[0]!;
  }

  /** Frames send() accepted that are not entirely in the kernel yet (the socket's buffer was full). */
  get pendingSends(): number {
    return this.#sends.length;
  }

  /** Private dups this socket holds for frames whose fds have not gone out yet. */
  get heldFds(): number {
    let n = 0;
    for (const s of this.#sends) n += s.fds.length;
    return n;
  }

  /**
   * The next frame with exactly the fds that arrived with it; null on orderly EOF. On any receive
   * error every fd received so far is closed, the socket is closed, and this rejects (EMSGSIZE for an
   * oversize frame or more fds than maxFds, ECTRUNC for other truncation, EPROTO, ECONNRESET).
   */
  recv(limits?: Partial<RecvLimits>): Promise<FdMessage | null> {
    if (this.#closed) return Promise.reject(closedError("recv", this.fd, this.#closeReason));
    if (this.#recvError) return Promise.reject(this.#recvError);
    if (this.#rx) return Promise.reject(busy(this.fd));
    let l: RecvLimits;
    try {
      l = checkLimits(limits);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const r = { limits: l, resolve, reject };
      // An array literal of one holds one slot; push onto an empty array would allocate 17.
      if (this.#recvs.length === 0) this.#recvs = [r];
      else this.#recvs.push(r);
      this.#pump();
    });
  }

  /**
   * recv() with a callback: the next frame, or the error, goes to `to.onFrame` (see FrameReceiver),
   * with no promise or closure made per read: a server's idle connection waiting for its next
   * frame holds only the receiver it passed. One at a time, and not while recv() promises are
   * pending (EBUSY, thrown). Errors and fds as recv(). limits: as recv()'s (a frozen complete one is
   * kept as it is); invalid ones throw.
   */
  receive(limits: Partial<RecvLimits> | undefined, to: FrameReceiver): void {
    if (this.#rx || this.#recvs.length > 0) throw busy(this.fd);
    const l = checkLimits(limits);
    const fail = this.#closed ? closedError("recv", this.fd, this.#closeReason) : this.#recvError;
    if (fail) {
      queueMicrotask(() => to.onFrame(fail, null));
      return;
    }
    this.#rx = to;
    this.#rxLimits = l;
    this.#pump();
  }

  /**
   * Takes back the frames send() accepted that have not started going out (none of their bytes in
   * the kernel): their promises reject with ECANCELED and their private fd dups are closed. A frame
   * partly sent stays (its fds went with its first bytes), so the stream's framing is never cut.
   * Returns how many frames were taken back.
   */
  dropUnsent(): number {
    let n = 0;
    for (let i = this.#sends.length - 1; i >= 0; i--) {
      const s = this.#sends[i]!;
      if (s.offset !== 0) break;
      this.#sends.splice(i, 1);
      closeQuietly(s.fds);
      s.reject(
        new NativeError(
          `send(fd ${this.fd}): taken back before any of it was sent`,
          "ECANCELED",
          ERRNO.ECANCELED,
          "sendmsg",
        ),
      );
      n++;
    }
    this.#update();
    return n;
  }

  /** Idempotent. Pending recv()/send() reject with ECLOSED; undelivered fds are closed. */
  close(): void {
    this.#shutdown(undefined);
  }

  #shutdown(reason: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    if (this.#armed !== 0) readiness().disarm(this.fd);
    if (this.#events !== 0) readiness().unref();
    this.#armed = 0;
    this.#events = 0;
    closeQuietly([this.fd]);
    closeQuietly(this.#reader?.drainFds() ?? []);
    this.#reader = null;
    const err = reason ?? closedError("recv", this.fd);
    for (const r of this.#recvs.splice(0)) r.reject(err);
    const to = this.#rx;
    this.#rx = null;
    // Told later, not inside close(): its caller may be the receiver itself.
    if (to) queueMicrotask(() => to.onFrame(err, null));
    const serr = reason ?? closedError("send", this.fd);
    for (const s of this.#sends.splice(0)) {
      closeQuietly(s.fds);
      s.reject(serr);
    }
  }

  /** A recv() or receive() is pending. */
  #wanted(): boolean {
    return this.#rx !== null || this.#recvs.length > 0;
  }

  /**
   * Reads until every pending receive has its frame or the socket would block. A receive()'s
   * receiver is told last, once this socket's state is settled (it may call receive() again).
   */
  #pump(): void {
    this.#reader ??= new FrameReader();
    const reader = this.#reader;
    let to: FrameReceiver | null = null;
    let got: FdMessage | null = null;
    try {
      while (this.#wanted() && !this.#closed) {
        const limits = this.#rx ? this.#rxLimits : this.#recvs[0]!.limits;
        const frame = reader.next(limits.maxBytes);
        if (frame) {
          if (this.#rx) {
            [to, got] = [this.#rx, frame];
            this.#rx = null;
            break;
          }
          this.#recvs.shift()!.resolve(frame);
          continue;
        }
        if (this.#eof) {
          if (reader.buffered > 0) {
            throw new NativeError(
              `recvmsg(fd ${this.fd}): the peer closed the connection in the middle of a frame (${reader.buffered} bytes of it received)`,
              "ECONNRESET",
              ERRNO.ECONNRESET,
              "recvmsg",
            );
          }
          to = this.#rx;
          this.#rx = null;
          for (const r of this.#recvs.splice(0)) r.resolve(null);
          break;
        }
        const [buf, off, len] = reader.space(limits.maxBytes);
        const out = fdsOut;
        // Armed since the last EAGAIN and not told of readiness: nothing came, no recvmsg to learn it.
        if (this.#drained && this.#armed & READABLE) break;
        const n = raw.recvmsg(this.fd, buf, off, len, limits.maxFds, out);
        if (n < 0) {
          this.#drained = true;
          break; // EAGAIN: wait for readability
        }
        if (n === 0) {
          this.#eof = true;
          continue;
        }
        const count = out[0]!;
        const fds: number[] = [];
        for (let i = 1; i <= count; i++) fds.push(out[i]!);
        try {
          reader.push(n, fds);
        } catch (err) {
          closeQuietly(fds);
          throw err;
        }
      }
      reader.settle();
      if (reader.buffered === 0 && this.#reader === reader) {
        closeQuietly(reader.drainFds()); // none: each came with a frame delivered
        this.#reader = null;
      }
    } catch (err) {
      reader.settle();
      const keep = (this.#rx ? this.#rxLimits : this.#recvs[0]?.limits)?.keepOpenOnError;
      const failed = this.#rx;
      this.#rx = null;
      if (keep) {
        // The stream position is lost: no more receiving, but the socket stays open for a reply.
        this.#recvError = err as Error;
        closeQuietly(reader.drainFds());
        reader.reset();
        for (const r of this.#recvs.splice(0)) r.reject(err as Error);
        this.#update();
      } else this.#shutdown(err as Error);
      failed?.onFrame(err as Error, null);
      return;
    }
    this.#update();
    to?.onFrame(null, got);
  }

  #flush(): void {
    while (this.#sends.length > 0) {
      const s = this.#sends[0]!;
      let n: number;
      try {
        n = raw.sendmsg(this.fd, s.bytes.subarray(s.offset), s.offset === 0 ? s.fds : []);
      } catch (err) {
        if (s.offset === 0 && frameNotSent(err)) {
          // The kernel refused the fds before taking a byte: only this frame fails, the stream
          // is intact and the next frame starts on a frame boundary.
          this.#sends.shift();
          closeQuietly(s.fds);
          s.reject(err as Error);
          continue;
        }
        this.#sendError = err as Error;
        for (const q of this.#sends.splice(0)) {
          closeQuietly(q.fds);
          q.reject(err as Error);
        }
        break;
      }
      if (n < 0) break;
      if (s.offset === 0) {
        closeQuietly(s.fds);
        s.fds = [];
      }
      s.offset += n;
      if (s.offset === s.bytes.length) {
        this.#sends.shift();
        s.resolve();
      }
    }
    this.#update();
  }

  /**
   * Arms the fd in the thread's readiness set (readiness.ts) for what is pending; holds a ref on it
   * exactly while something is pending. An fd armed for reading only stays armed when nothing is
   * pending: a served connection asks for its next frame as soon as it answered this one, and
   * disarming and arming again would cost an epoll_ctl each. If the socket turns readable
   * meanwhile, [onReady] disarms it then.
   */
  #update(): void {
    if (this.#closed) return;
    const want = (this.#wanted() && !this.#eof ? READABLE : 0) | (this.#sends.length > 0 ? WRITABLE : 0);
    if (want === this.#events && (want !== 0 || (this.#armed & WRITABLE) === 0)) return;
    if (want === 0) {
      if (this.#armed & WRITABLE) {
        // Armed for writing with nothing to write: a writable socket would wake us at once.
        readiness().disarm(this.fd);
        this.#armed = 0;
      }
      if (this.#events !== 0) readiness().unref();
    } else {
      const r = readiness();
      if (want !== this.#armed) {
        r.arm(this.fd, want, this);
        this.#armed = want;
      }
      if (this.#events === 0) r.ref();
    }
    this.#events = want;
  }

  /** @internal The thread's readiness: the fd may be ready for events (or errno: it failed). */
  [onReady](errno: number, events: number): void {
    if (this.#closed) return;
    if (this.#events === 0) {
      // Left armed with nothing pending (#update): disarm now; the next recv() reads what came.
      if (this.#armed !== 0) readiness().disarm(this.fd);
      this.#armed = 0;
      this.#drained = false;
      return;
    }
    if (errno !== 0) {
      // An error on the socket (POLLERR: the fd is no longer watched) is a pending error
      // (ECONNRESET: the peer closed with our bytes unread) with the frames that arrived before it
      // still queued: deliver those and let recvmsg/sendmsg report the real error. Only if neither
      // settles what is pending does the poll error close the socket.
      const pollError = NativeError.fromErrno(errno, "uv_poll", `fd ${this.fd}`);
      readiness().unref();
      this.#events = 0;
      this.#armed = 0;
      this.#drained = false;
      if (this.#sends.length > 0) this.#flush();
      if (this.#wanted()) this.#pump();
      if (!this.#closed && (this.#wanted() || this.#sends.length > 0)) this.#shutdown(pollError);
      return;
    }
    if (events & WRITABLE) this.#flush();
    if (events & READABLE) {
      this.#drained = false;
      this.#pump();
    }
  }
}

/**
 * Binds and listens on a Unix socket path (or '@abstract' name) and returns the listening fd
 * (non-blocking, close-on-exec), accepting nothing. A stale socket file (nobody accepting) is
 * removed first; a live one is EADDRINUSE; a non-socket file is refused. The file gets mode (default
 * 0o600) before listen(). FdServer.listen is built on it; alone it gives a listener whose owner can
 * hand the fd on (net.Server.listen({ fd }), the fdstore, a hand-over) and stop accepting without
 * unlinking the path, which closing a path-bound net.Server or FdServer would do.
 */
export function listenUnix(path: string, opts: { mode?: number; backlog?: number } = {}): number {
  const mode = opts.mode ?? 0o600;
  const backlog = opts.backlog ?? 511;
  if (typeof path !== "string" || path.length === 0)
    throw invalid("listen", "path must be a non-empty string");
  if (!path.startsWith("@") && existsSync(path)) {
    const st = lstatSync(path);
    if (!st.isSocket())
      throw new NativeError(
        `listen(${path}): exists and is not a socket; refusing to remove it`,
        "EEXIST",
        ERRNO.EEXIST,
        "listen",
      );
    let live = false;
    try {
      const fd = raw.connect(path);
      live = true;
      if (fd >= 0) raw.closeFd(fd);
    } catch (err) {
      if ((err as NativeError).code !== "ECONNREFUSED") throw err;
    }
    if (live)
      throw new NativeError(
        `listen(${path}): another server is accepting on this socket`,
        "EADDRINUSE",
        ERRNO.EADDRINUSE,
        "listen",
      );
    unlinkSync(path);
  }
  return raw.listen(path, backlog, mode);
}

export class FdServer {
  readonly path: string;
  readonly #fd: number;
  #poller: Poller | null = null;
  #cb: ((sock: FdSocket) => void) | null = null;
  #closed = false;
  #ino: number | null = null;
  #backoff: NodeJS.Timeout | null = null;
  #warnedAt = 0;
  #pauses = 0;
  #paused = false;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
    if (!path.startsWith("@")) this.#ino = lstatSync(path).ino;
  }

  /**
   * Listens on a Unix socket path (or '@abstract' name). A stale socket file (nobody accepting) is
   * removed first; a live one is EADDRINUSE; a non-socket file is refused. The file gets mode
   * (default 0o600) before listen(), so no client ever connects through looser permissions.
   */
  static listen(path: string, opts: { mode?: number; backlog?: number } = {}): FdServer {
    return new FdServer(path, listenUnix(path, opts));
  }

  /**
   * Serves an already listening socket bound at path (handed over by a previous brokerd, or from
   * systemd's fdstore). It is closed (and the file removed if still this socket) like one from listen().
   */
  static adopt(path: string, fd: number): FdServer {
    return new FdServer(path, fd);
  }

  /** The listening fd (to hand over to a successor; it stays this server's). */
  get fd(): number {
    return this.#fd;
  }

  /** Starts accepting (accept4 with SOCK_CLOEXEC | SOCK_NONBLOCK on readiness). Keeps the process alive until close(). */
  onConnection(cb: (sock: FdSocket) => void): void {
    if (this.#closed) throw closedError("onConnection", this.#fd);
    this.#cb = cb;
    if (!this.#poller) {
      const p = new raw.Poller(this.#fd);
      p.onready = () => this.#accept();
      this.#poller = p;
      p.start(READABLE);
      p.ref();
    }
  }

  /**
   * Idempotent. Stops accepting, closes the listening fd and removes the socket file if still ours
   * (keepPath: leave it, e.g. when the socket lives on in systemd's fdstore or a successor).
   */
  close(opts: { keepPath?: boolean } = {}): void {
    if (this.#closed) return;
    if (opts.keepPath) this.#ino = null;
    this.#closed = true;
    if (this.#backoff) clearTimeout(this.#backoff);
    this.#poller?.close();
    this.#poller = null;
    closeQuietly([this.#fd]);
    if (this.#ino !== null) {
      try {
        if (lstatSync(this.path).ino === this.#ino) unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
  }

  /**
   * Stops accepting (idempotent): connections wait in the listen backlog, for whoever accepts on
   * this socket next (a successor that holds a copy of it, or this server after resume()).
   */
  pause(): void {
    this.#paused = true;
    this.#poller?.stop();
  }

  /** Accepts again after pause() (idempotent). */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (!this.#closed && !this.#backoff) this.#poller?.start(READABLE);
  }

  #accept(): void {
    for (let i = 0; i < 128 && !this.#closed && !this.#paused; i++) {
      let fd: number;
      try {
        fd = raw.accept(this.#fd);
      } catch (err) {
        // EMFILE and friends: stop polling for a moment instead of spinning on a ready listener.
        // Clients can cause this at will, so it is said at most once per 10 s.
        const now = Date.now();
        this.#pauses++;
        if (now - this.#warnedAt >= 10_000) {
          process.emitWarning(
            `FdServer(${this.path}): ${(err as Error).message}; pausing accept for 100 ms (${this.#pauses} pauses since the last warning)`,
          );
          this.#warnedAt = now;
          this.#pauses = 0;
        }
        this.#poller?.stop();
        this.#backoff = setTimeout(() => {
          this.#backoff = null;
          if (!this.#closed && !this.#paused) this.#poller?.start(READABLE);
        }, 100);
        return;
      }
      if (fd < 0) return;
      this.#cb!(FdSocket.fromAccepted(fd));
    }
  }
}
