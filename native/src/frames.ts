// frames.ts: owns reassembling the fd channel's frames from a byte stream: each frame is a 4-byte
// big-endian length + payload, written by ONE sendmsg that carries all of the frame's fds. The
// kernel attaches those fds to the frame's first byte, and a recvmsg that returns fds stops right
// after the skb they came with, so the fds of a recvmsg belong to the LAST frame that starts inside
// the bytes it returned. Fds arriving after the start of their frame was already read are a protocol
// violation (a sender that splits a frame over several sendmsg calls and attaches fds to a later
// one); if both pieces come in one recvmsg the fds are given to that frame. Pure bookkeeping: no
// syscalls, no fd is closed here (drainFds hands undelivered fds to whoever must close them).
import { ERRNO, NativeError } from "./errors.js";

export const HEADER_BYTES = 4;
const SCRATCH_BYTES = 64 * 1024 + HEADER_BYTES;
/** Shared by every reader between a read and settle(): idle sockets hold no receive buffer. */
let scratch: Buffer | null = null;

export interface Frame {
  data: Buffer;
  fds: number[];
}

export class FrameReader {
  #buf: Buffer | null = null;
  #start = 0; // first byte of the first undelivered frame
  #end = 0; // end of received bytes
  #fds: { pos: number; fds: number[] }[] = [];

  /** Bytes received but not yet delivered. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Where the next read should go: [buffer, offset, length]. Throws EMSGSIZE for an oversize header. */
  space(maxBytes: number): [Buffer, number, number] {
    if (this.#buf === null) {
      scratch ??= Buffer.allocUnsafeSlow(SCRATCH_BYTES);
      this.#buf = scratch;
      this.#start = this.#end = 0;
      return [scratch, 0, scratch.length];
    }
    const have = this.#end - this.#start;
    let need = HEADER_BYTES + 1;
    if (have >= HEADER_BYTES) {
      const len = this.#buf.readUInt32BE(this.#start);
      this.#checkLength(len, maxBytes);
      need = HEADER_BYTES + len;
    }
    const buf = this.#buf;
    if (buf.length - this.#start < need || (buf.length === this.#end && this.#start > 0)) {
      const next = Buffer.allocUnsafeSlow(Math.max(need, 4096, have * 2));
      buf.copy(next, 0, this.#start, this.#end);
      this.#move(next);
    }
    return [this.#buf!, this.#end, this.#buf!.length - this.#end];
  }

  /** Records n bytes just read into space() and the fds that came with them. */
  push(n: number, fds: number[]): void {
    const a = this.#end;
    const b = a + n;
    this.#end = b;
    if (fds.length === 0) return;
    const buf = this.#buf!;
    let p = this.#start;
    while (p + HEADER_BYTES <= b) {
      const next = p + HEADER_BYTES + buf.readUInt32BE(p);
      if (next >= b) break;
      p = next;
    }
    if (p < a || this.#fds.some((x) => x.pos === p)) {
      throw new NativeError(
        `recvmsg: ${fds.length} fds arrived in the middle of a frame; the peer must send each frame with one sendmsg that carries its fds`,
        "EPROTO",
        ERRNO.EPROTO,
        "recvmsg",
      );
    }
    this.#fds.push({ pos: p, fds });
  }

  /** The next complete frame, or null if more bytes are needed. Throws EMSGSIZE for an oversize frame. */
  next(maxBytes: number): Frame | null {
    const buf = this.#buf;
    if (buf === null || this.#end - this.#start < HEADER_BYTES) return null;
    const len = buf.readUInt32BE(this.#start);
    this.#checkLength(len, maxBytes);
    const total = HEADER_BYTES + len;
    if (this.#end - this.#start < total) return null;
    const data = Buffer.allocUnsafe(len);
    buf.copy(data, 0, this.#start + HEADER_BYTES, this.#start + total);
    let fds: number[] = [];
    if (this.#fds.length > 0 && this.#fds[0]!.pos === this.#start) fds = this.#fds.shift()!.fds;
    this.#start += total;
    return { data, fds };
  }

  /** Call after every read/deliver cycle: moves leftovers out of the shared scratch buffer. */
  settle(): void {
    if (this.#buf === null) return;
    if (this.#start === this.#end) {
      this.#buf = null;
      this.#start = this.#end = 0;
      return;
    }
    if (this.#buf === scratch) {
      const have = this.#end - this.#start;
      const next = Buffer.allocUnsafeSlow(Math.max(have, 4096));
      scratch.copy(next, 0, this.#start, this.#end);
      this.#move(next);
    }
  }

  /** Removes and returns every fd received but not delivered (the caller closes them). */
  drainFds(): number[] {
    const all = this.#fds.flatMap((x) => x.fds);
    this.#fds = [];
    return all;
  }

  /** Forgets everything buffered (after drainFds). */
  reset(): void {
    this.#buf = null;
    this.#start = this.#end = 0;
  }

  #move(next: Buffer): void {
    const delta = this.#start;
    for (const x of this.#fds) x.pos -= delta;
    this.#end -= this.#start;
    this.#start = 0;
    this.#buf = next;
  }

  #checkLength(len: number, maxBytes: number): void {
    if (len > maxBytes) {
      throw new NativeError(
        `recvmsg: the peer sent a ${len}-byte frame; the limit is maxBytes = ${maxBytes}`,
        "EMSGSIZE",
        ERRNO.EMSGSIZE,
        "recvmsg",
      );
    }
  }
}
