// UnreadReplies: which of one fd-channel connection's replies the peer may not have read yet, and
// how many fds they hold. The kernel keeps the fds of a sent reply in flight (in the peer's receive
// queue, one open file each) until the peer reads it, and for as long as the peer keeps its socket
// open, whatever brokerd does with its end; so brokerd counts them, per connection and per identity.
//
// What the kernel tells us: SIOCOUTQ on an AF_UNIX stream socket is the memory (skb truesize) of
// what this end sent and the peer has not consumed yet; it is never less than the bytes of those
// replies, and the peer consumes replies in order. So a reply is certainly read once the replies
// sent after it add up to more bytes than SIOCOUTQ; every other reply is counted as unread. The
// count can be too high (a reply read but counted), never too low. Replies brokerd itself holds
// because the send would block are counted apart (held) until they are in the kernel.
// Pure: the caller reads SIOCOUTQ and passes it in; nothing here does I/O or keeps time.

/**
 * At least the kernel memory (skb truesize) of a frame of `bytes` sent in one sendmsg on an AF_UNIX
 * stream socket: its head is kmalloc'ed (rounded up to at most twice its size) with the sk_buff and
 * shared info (under 1 KiB), a paged part is counted in whole pages, and a long frame is cut into
 * skbs of at most half the send buffer (counted here per 32 KiB, fewer bytes than any such cut).
 */
export function truesizeBound(bytes: number): number {
  return 2 * bytes + 8192 * (1 + Math.ceil(bytes / 32768));
}

interface Sent {
  /** Bytes of the frame(s), length prefix included. */
  bytes: number;
  fds: number;
}

/**
 * The empty list every connection starts with and returns to: only ever replaced, never pushed to
 * (sentReply makes a list of its own), so an idle connection holds no array of its own.
 */
const NONE: Sent[] = [];

export class UnreadReplies {
  /**
   * Replies that may be unread, oldest first (consecutive ones without fds merged), from the
   * oldest one with fds: fd-less replies before it tell nothing (only the bytes sent after a reply
   * can show it was read), so they are not kept.
   */
  private sent: Sent[] = NONE;
  private sentFds = 0;
  /** Fds of a reply brokerd holds because the send would block. */
  private heldFds = 0;
  /** SIOCOUTQ at the last settle() plus truesizeBound() of every reply sent since. */
  private outqBound = 0;

  /** The fds counted as unread now: possibly unread replies plus held ones. */
  get fds(): number {
    return this.sentFds + this.heldFds;
  }

  /**
   * Bytes the peer may not have read, never fewer than SIOCOUTQ would say now: what it said at the
   * last settle() plus every reply in the kernel since (so a caller may skip asking while this is low).
   */
  get outq(): number {
    return this.outqBound;
  }

  /** Replies remembered (bounded by what may be unread). */
  get length(): number {
    return this.sent.length;
  }

  /** A reply of `bytes` bytes carrying `fds` fds is now entirely in the kernel. */
  sentReply(bytes: number, fds: number): void {
    this.outqBound += truesizeBound(bytes);
    // No reply with fds before it: nothing to prove read with its bytes, so nothing is kept (an
    // idle connection whose last reply had no fds, the usual one, holds no list).
    if (fds === 0 && this.sentFds === 0) return;
    const last = this.sent.at(-1);
    if (fds === 0 && last && last.fds === 0) last.bytes += bytes;
    // A literal of one: push onto an empty array would allocate 17 slots (an idle connection's).
    else if (this.sent.length === 0) this.sent = [{ bytes, fds }];
    else this.sent.push({ bytes, fds });
    this.sentFds += fds;
  }

  /**
   * The newest reply recorded by sentReply() never reached the kernel after all (sendmsg refused
   * it whole, ETOOMANYREFS): forgets it, so its bytes do not make older unread replies look read.
   */
  unsent(bytes: number, fds: number): void {
    const last = this.sent.at(-1);
    if (!last || fds === 0 || last.fds !== fds || last.bytes !== bytes) return;
    this.sent.pop();
    this.sentFds -= fds;
    if (this.sentFds === 0) this.sent = NONE;
  }

  /** A reply with `fds` fds waits in brokerd (the socket's buffer is full); negative to take back. */
  hold(fds: number): void {
    this.heldFds = Math.max(0, this.heldFds + fds);
  }

  /**
   * The kernel says `outq` bytes of what this end sent are not consumed (SIOCOUTQ): forgets the
   * replies that must have been read and returns the fds counted as unread.
   */
  settle(outq: number): number {
    this.outqBound = Math.max(outq, 0);
    if (outq <= 0) {
      this.sent = NONE;
      this.sentFds = 0;
      return this.fds;
    }
    // From the newest back: the first reply whose bytes, with those of every later one, exceed
    // outq cannot be in the queue any more, and neither can anything older.
    let bytes = 0;
    let keepFrom = 0;
    for (let i = this.sent.length - 1; i >= 0; i--) {
      bytes += this.sent[i]!.bytes;
      if (bytes > outq) {
        keepFrom = i + 1;
        break;
      }
    }
    if (keepFrom > 0) {
      for (let i = 0; i < keepFrom; i++) this.sentFds -= this.sent[i]!.fds;
      // What is left without fds tells nothing any more (see `sent`).
      this.sent = this.sentFds === 0 ? NONE : this.sent.slice(keepFrom);
    }
    return this.fds;
  }
}
