// fd-channel.ts: byte-level fuzz cases for brokerd's fd channel (fd.sock). A case is data: the
// writes a hostile peer makes (bytes, with how many fds ride on each sendmsg), then how it ends
// (read the replies, close at once, or read one and close: closing mid-reply). Cases are generated
// from a Prng alone, so a seed reproduces them, and run against the live socket with the raw
// sendmsg, since a well-behaved FdSocket could never split a frame or put fds in its middle.
//
// What the spec promises and the runner checks (fdchannel.proto; docs/design.md §7): every complete
// frame of at most MAX_REQUEST_BYTES (brokerd's FdRequest limit) that precedes any violation gets
// its own FdReply, in order, decodable, with an fd only when the status is OK; a violation (a
// longer frame, fds sent to brokerd) makes brokerd close the connection; and nothing a peer does
// stops it answering.
import { closeSync, openSync } from "node:fs";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { MAX_REQUEST_BYTES } from "@vfio-broker/brokerd/fdpass/channel";
import { MAX_REPLY_FDS } from "@vfio-broker/brokerd/fdpass/transport";
import { WorkloadAdapter } from "@vfio-broker/brokerd/fdpass/workload-adapter";
import { closeFd, FdSocket } from "@vfio-broker/native";
import { raw } from "@vfio-broker/native/binding";
import { FdReplySchema, FdRequestSchema, FdStatus, WorkloadReplySchema } from "@vfio-broker/proto";
import { mutate } from "./mutate.js";
import type { Prng } from "./prng.js";
import {
  checkWorkloadReply,
  openFrame,
  patchSentinel,
  preludeHello,
  type WorkloadPlan,
} from "./workload-wire.js";

/** brokerd reads FdRequest frames of at most this many bytes (its own constant, not a copy). */
export const FD_MAX_FRAME = MAX_REQUEST_BYTES;
const REPLY_TIMEOUT_MS = 5000;

export interface FdWrite {
  bytes: Buffer;
  /** How many fds (dups of /dev/null) ride on this write's sendmsg. */
  fds: number;
  /** Pause before this write, so brokerd sees the pieces in separate reads. */
  pauseMs: number;
}

export type FdEnd = "read" | "close" | "read-one-close";

export interface FdCase {
  kind: string;
  writes: FdWrite[];
  end: FdEnd;
  /** Replies the spec requires (end "read"): complete frames <= FD_MAX_FRAME before any violation. */
  answerable: number;
  /** The stream breaks the protocol (oversize frame or fds), so brokerd must close the connection. */
  violation: boolean;
  /** Tickets in the case that were real when it was generated (for the report; not replayable). */
  realTickets: number;
  mutations: string[];
  /** A workload-protocol case (workload.ts): how it starts. */
  workload?: WorkloadPlan;
}

export function frame(payload: Buffer): Buffer {
  const h = Buffer.allocUnsafe(4);
  h.writeUInt32BE(payload.length, 0);
  return Buffer.concat([h, payload]);
}

function request(ticket: string): Buffer {
  return Buffer.from(toBinary(FdRequestSchema, create(FdRequestSchema, { ticket })));
}

/** Frames brokerd must answer and whether the stream breaks the protocol, from the bytes alone. */
export function judge(writes: readonly FdWrite[]): { answerable: number; violation: boolean } {
  const stream = Buffer.concat(writes.map((w) => w.bytes));
  let answerable = 0;
  let violation = false;
  for (let pos = 0; pos + 4 <= stream.length; ) {
    const len = stream.readUInt32BE(pos);
    if (len > FD_MAX_FRAME) {
      violation = true;
      break;
    }
    if (pos + 4 + len > stream.length) break;
    // One reply per frame on either protocol (workload.proto: events apart; a hello refused
    // closes the connection, which the runner sees from its reply).
    answerable++;
    pos += 4 + len;
  }
  if (writes.some((w) => w.fds > 0)) {
    // Frames written before the fds may be read together with them (the kernel merges writes into
    // one recvmsg) and then dropped with the connection, so none of them is owed a reply.
    violation = true;
    answerable = 0;
  }
  return { answerable, violation };
}

function ticketText(rng: Prng, real: readonly string[]): string {
  const kind = rng.weighted({ real: real.length > 0 ? 3 : 0, random: 3, empty: 1, long: 1, binary: 1 });
  if (kind === "real") return rng.pick(real);
  if (kind === "empty") return "";
  // Around the frame limit: a ticket of n characters is a frame of n + 3 bytes (tag, 2-byte length).
  if (kind === "long")
    return "t".repeat(rng.pick([255, 256, 1000, FD_MAX_FRAME - 4, FD_MAX_FRAME - 3, FD_MAX_FRAME - 2, 4096]));
  if (kind === "binary") return rng.bytes(rng.size(64)).toString("latin1");
  return rng.bytes(rng.range(1, 48)).toString("base64url");
}

/** One FdRequest payload: valid, a mutated valid one, or noise. */
function payload(rng: Prng, real: readonly string[], muts: string[]): Buffer {
  const valid = request(ticketText(rng, real));
  const how = rng.weighted({ valid: 4, mutated: 5, noise: 1 });
  if (how === "valid") return valid;
  if (how === "noise") return rng.bytes(rng.size(FD_MAX_FRAME + 64));
  const m = mutate(valid, rng, [request("x"), valid]);
  muts.push(...m.how);
  return m.bytes;
}

/** Splits bytes into 1..n writes at random points. */
export function pieces(rng: Prng, b: Buffer, n: number, fdsAt = -1, fds = 0): FdWrite[] {
  const cuts = [...new Set(Array.from({ length: n - 1 }, () => rng.int(b.length)))]
    .filter((c) => c > 0)
    .sort((x, y) => x - y);
  const out: FdWrite[] = [];
  let prev = 0;
  for (const c of [...cuts, b.length]) {
    if (c > prev)
      out.push({
        bytes: b.subarray(prev, c),
        fds: 0,
        pauseMs: out.length === 0 ? 0 : rng.pick([0, 0, 1, 5]),
      });
    prev = c;
  }
  if (fdsAt >= 0 && out.length > 0) out[Math.min(fdsAt, out.length - 1)]!.fds = fds;
  return out;
}

const KIND_WEIGHTS = {
  request: 4,
  pipeline: 3,
  split: 2,
  oversize: 2,
  zeroLength: 1,
  halfFrame: 2,
  withFds: 2,
  noise: 1,
  realTicket: 2,
  doubleRedeem: 1,
} as const;

/**
 * Generates one case. realTickets are tickets brokerd issued to this process and not yet used; a
 * case that wants one and gets none falls back to a random ticket.
 */
export function generateFdCase(rng: Prng, realTickets: readonly string[]): FdCase {
  const kind = rng.weighted(KIND_WEIGHTS);
  const muts: string[] = [];
  let writes: FdWrite[];
  switch (kind) {
    case "request":
      writes = [{ bytes: frame(payload(rng, realTickets, muts)), fds: 0, pauseMs: 0 }];
      break;
    case "pipeline": {
      const frames = Array.from({ length: rng.range(2, 30) }, () => frame(payload(rng, realTickets, muts)));
      writes = pieces(rng, Buffer.concat(frames), rng.range(1, 4));
      break;
    }
    case "split":
      writes = pieces(rng, frame(payload(rng, realTickets, muts)), rng.range(2, 6));
      break;
    case "oversize": {
      const len = rng.pick([FD_MAX_FRAME + 1, 4096, 65536, 65537, 0x7fffffff, 0xffffffff]);
      const h = Buffer.allocUnsafe(4);
      h.writeUInt32BE(len, 0);
      const lead = rng.chance(0.3) ? frame(request("before-oversize")) : Buffer.alloc(0);
      writes = pieces(
        rng,
        Buffer.concat([lead, h, rng.bytes(rng.size(Math.min(len, 70_000)))]),
        rng.range(1, 3),
      );
      break;
    }
    case "zeroLength":
      writes = [
        {
          bytes: Buffer.concat(Array.from({ length: rng.range(1, 8) }, () => frame(Buffer.alloc(0)))),
          fds: 0,
          pauseMs: 0,
        },
      ];
      break;
    case "halfFrame": {
      const f = frame(payload(rng, realTickets, muts));
      writes = [{ bytes: f.subarray(0, rng.range(1, Math.max(1, f.length - 1))), fds: 0, pauseMs: 0 }];
      break;
    }
    case "withFds": {
      const f = Buffer.concat(
        Array.from({ length: rng.range(1, 3) }, () => frame(request(ticketText(rng, [])))),
      );
      writes = pieces(rng, f, rng.range(1, 3), rng.range(0, 2), rng.range(1, 4));
      break;
    }
    case "noise":
      writes = [{ bytes: rng.bytes(rng.range(1, rng.size(70_000) + 1)), fds: 0, pauseMs: 0 }];
      break;
    case "realTicket":
    case "doubleRedeem": {
      const t = realTickets.length > 0 ? realTickets[0]! : ticketText(rng, []);
      const f = frame(request(t));
      writes = [{ bytes: kind === "doubleRedeem" ? Buffer.concat([f, f]) : f, fds: 0, pauseMs: 0 }];
      break;
    }
  }
  const { answerable, violation } = judge(writes);
  const end: FdEnd = rng.weighted({ read: 7, close: 2, "read-one-close": 1 });
  const stream = Buffer.concat(writes.map((w) => w.bytes));
  const real = realTickets.filter((t) => stream.includes(t)).length;
  return { kind, writes, end, answerable, violation, realTickets: real, mutations: muts };
}

/** How one case went. outcome is what the report counts; problems are spec violations. */
export interface FdResult {
  outcome: string;
  replies: string[];
  problems: string[];
  /** The connection spoke the workload protocol (its replies are WorkloadReply). */
  workload: boolean;
}

async function sleep(ms: number): Promise<void> {
  if (ms > 0) await new Promise((r) => setTimeout(r, ms));
}

/** sendmsg until every byte is out; false if brokerd closed the connection first. */
async function writeAll(fd: number, w: FdWrite, devnull: number): Promise<boolean> {
  const fds: number[] = [];
  try {
    for (let i = 0; i < w.fds; i++) fds.push(raw.dupFd(devnull));
    let off = 0;
    const deadline = Date.now() + REPLY_TIMEOUT_MS;
    while (off < w.bytes.length) {
      let n: number;
      try {
        n = raw.sendmsg(fd, w.bytes.subarray(off), off === 0 ? fds : []);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === "EPIPE" || code === "ECONNRESET") return false;
        throw e;
      }
      if (n < 0) {
        // brokerd stopped reading (it answers one frame at a time): it may be waiting for us to
        // read its replies, which this peer never does mid-write; a violation may also be closing it.
        if (Date.now() > deadline) return false;
        await sleep(2);
        continue;
      }
      off += n;
    }
    return true;
  } finally {
    for (const fd of fds) closeFd(fd);
  }
}

type Received =
  | { kind: "reply"; data: Buffer; fds: number[] }
  | { kind: "eof" }
  | { kind: "error"; code: string }
  | { kind: "timeout" };

async function receive(sock: FdSocket): Promise<Received> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Received>((r) => {
    timer = setTimeout(() => r({ kind: "timeout" }), REPLY_TIMEOUT_MS);
  });
  const got = sock.recv({ maxBytes: 1 << 20, maxFds: MAX_REPLY_FDS }).then(
    (m): Received => (m ? { kind: "reply", data: m.data, fds: m.fds } : { kind: "eof" }),
    (e): Received => ({ kind: "error", code: String((e as { code?: string }).code ?? e) }),
  );
  try {
    return await Promise.race([got, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** What a status column gets when its reply is a refusal without a message. */
export const NO_MESSAGE = " (no message)";

/** Decodes and checks one reply; returns its status name. Closes any fds that came with it. */
function checkReply(r: { data: Buffer; fds: number[] }, problems: string[]): string {
  for (const fd of r.fds) closeFd(fd);
  let status: string;
  try {
    const reply = fromBinary(FdReplySchema, r.data);
    status = FdStatus[reply.status] ?? `status ${reply.status}`;
    // Counted, and judged by main.ts (required with FUZZ_STRICT_STATUS=1): a refusal says why.
    if (reply.status !== FdStatus.OK && reply.message === "") status += NO_MESSAGE;
    if (FdStatus[reply.status] === undefined) problems.push(`reply with unknown status ${reply.status}`);
    if (r.fds.length !== (reply.status === FdStatus.OK ? 1 : 0))
      problems.push(`${status} reply came with ${r.fds.length} fds`);
  } catch (e) {
    problems.push(`reply is not an FdReply: ${(e as Error).message}`);
    status = "UNDECODABLE";
  }
  return status;
}

/** Checks one frame from brokerd against the connection's protocol; closes its fds. */
function check(workload: boolean, r: { data: Buffer; fds: number[] }, problems: string[]) {
  if (!workload) {
    const column = checkReply(r, problems);
    return { column, event: false, ok: column === "OK" };
  }
  try {
    return checkWorkloadReply(r, problems);
  } finally {
    for (const fd of r.fds) closeFd(fd);
  }
}

/** The next reply that is not an event (events are counted in replies as "event"). */
async function nextReply(sock: FdSocket, workload: boolean, replies: string[], problems: string[]) {
  for (;;) {
    const r = await receive(sock);
    if (r.kind !== "reply") return r;
    const got = check(workload, r, problems);
    replies.push(got.column);
    if (!got.event) return { kind: "checked" as const, ...got };
  }
}

/**
 * A workload case's prelude: a hello, then the open (each answered first); the device file's id,
 * or null when brokerd refused (its quota) and the case cannot go on.
 */
async function prelude(
  sock: FdSocket,
  plan: WorkloadPlan,
  devnull: number,
  replies: string[],
  problems: string[],
) {
  const steps = [preludeHello(), ...(plan.open ? [openFrame(plan.open)] : [])];
  let id = 0n;
  for (const f of steps) {
    if (!(await writeAll(sock.fd, { bytes: frame(f), fds: 0, pauseMs: 0 }, devnull))) return null;
    const r = await receive(sock);
    if (r.kind !== "reply") return null;
    const reply = fromBinary(WorkloadReplySchema, r.data);
    const got = check(true, r, problems);
    replies.push(got.column);
    if (!got.ok) return null;
    if (reply.kind.case === "deviceOpened") id = reply.kind.value.deviceFileId;
  }
  return id;
}

export async function runFdCase(path: string, c: FdCase): Promise<FdResult> {
  const problems: string[] = [];
  const replies: string[] = [];
  const sock = await FdSocket.connect(path);
  const devnull = openSync("/dev/null", "r");
  const first = firstFrame(c.writes);
  const helloFirst = !c.workload?.prelude && first !== null && WorkloadAdapter.helloOf(first) !== undefined;
  const workload = !!c.workload?.prelude || helloFirst;
  let outcome = "";
  try {
    let writes = c.writes;
    if (c.workload?.prelude) {
      const id = await prelude(sock, c.workload, devnull, replies, problems);
      if (id === null) return { outcome: "prelude-refused", replies, problems, workload };
      writes = writes.map((w) => ({ ...w, bytes: patchSentinel(w.bytes, id) }));
    }
    let wroteAll = true;
    for (const w of writes) {
      await sleep(w.pauseMs);
      if (!(await writeAll(sock.fd, w, devnull))) {
        wroteAll = false;
        break;
      }
    }
    // A refused hello closes the connection: the rest of the stream may meet a closed socket.
    if (!wroteAll && !c.violation && !helloFirst)
      problems.push("brokerd closed the connection while a well-formed stream was written");
    if (c.end === "close") return { outcome: "closed-by-us", replies, problems, workload };
    const want = c.end === "read-one-close" ? Math.min(1, c.answerable) : c.answerable;
    let violation = c.violation;
    for (let n = 0; n < want; n++) {
      const r = await nextReply(sock, workload, replies, problems);
      if (r.kind !== "checked") {
        outcome = r.kind === "error" ? `error:${r.code}` : r.kind;
        problems.push(`${n} of ${want} required replies, then ${outcome}`);
        return { outcome, replies, problems, workload };
      }
      if (n === 0 && helloFirst) {
        const expect = c.workload?.hello ?? "any";
        const quota = r.column === "REFUSED/RESOURCE_EXHAUSTED";
        if (expect === "OK" && !r.ok && !quota) problems.push(`a valid hello got ${r.column}`);
        if (expect === "error" && r.ok) problems.push("a hello breaking a limit was answered OK");
        // Not OK: the connection closes, nothing more is owed.
        if (!r.ok) {
          violation = c.end === "read";
          break;
        }
      }
    }
    if (c.end === "read" && violation) {
      // Past the answerable frames brokerd may still answer some (timing), then must hang up.
      for (;;) {
        const r = await nextReply(sock, workload, replies, problems);
        if (r.kind === "checked") continue;
        outcome =
          r.kind === "error"
            ? `closed-by-brokerd:${r.code}`
            : r.kind === "eof"
              ? "closed-by-brokerd"
              : r.kind;
        if (r.kind === "timeout")
          problems.push("a protocol violation did not make brokerd close the connection");
        break;
      }
    } else {
      outcome = replies.length > 0 ? "replied" : "no-reply-owed";
    }
    return { outcome, replies, problems, workload };
  } finally {
    closeSync(devnull);
    sock.close();
  }
}

/** The stream's first complete frame, if any. */
function firstFrame(writes: readonly FdWrite[]): Buffer | null {
  const stream = Buffer.concat(writes.map((w) => w.bytes));
  if (stream.length < 4) return null;
  const len = stream.readUInt32BE(0);
  return len <= FD_MAX_FRAME && 4 + len <= stream.length ? stream.subarray(4, 4 + len) : null;
}

/** A case as JSON for reproducer files: bytes in hex. */
export function describeFdCase(c: FdCase): unknown {
  return { ...c, writes: c.writes.map((w) => ({ ...w, bytes: w.bytes.toString("hex") })) };
}

/** The inverse of describeFdCase, for replaying a reproducer. */
export function parseFdCase(
  o: Omit<FdCase, "writes"> & { writes: { bytes: string; fds: number; pauseMs: number }[] },
): FdCase {
  return { ...o, writes: o.writes.map((w) => ({ ...w, bytes: Buffer.from(w.bytes, "hex") })) };
}
