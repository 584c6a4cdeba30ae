// Tests for the audit journal with its filesystem layer replaced by an in-memory one that fails on
// demand (ENOSPC with short writes, EMFILE, EIO, a directory removed under it) and a clock the
// test moves: drops are counted by reason, stderr hears once per interval, lines stay whole,
// writing recovers (with a journal.gap line), reopen failures keep a working fd, repeated failures
// are aggregated per identity within a bounded table, and nothing ever throws to the emitter.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it, test } from "node:test";
import type { Broker, Recorder } from "./broker.js";
import type { JournalWriter } from "./journal/writer.js";
import { Journal, type JournalOptions } from "./journal.js";

const PATH = "/var/log/vfio-broker/journal.jsonl";

function errno(code: string): Error {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

interface FakeFile {
  data: Buffer;
  linked: boolean;
}

/** A filesystem with one directory, a byte capacity and switchable failures. */
class FakeFs implements JournalWriter {
  readonly files = new Map<string, FakeFile>();
  readonly fds = new Map<number, FakeFile>();
  private nextFd = 10;
  dirGone = false;
  capacity = Number.POSITIVE_INFINITY;
  /** errno to throw from each call, while set. */
  fail: Partial<Record<"open" | "write" | "truncate", string>> = {};
  calls = 0;

  used(): number {
    let n = 0;
    for (const f of new Set([...this.files.values(), ...this.fds.values()])) n += f.data.length;
    return n;
  }
  open(path: string): number {
    this.calls++;
    if (this.fail.open) throw errno(this.fail.open);
    if (this.dirGone) throw errno("ENOENT");
    let f = this.files.get(path);
    if (!f) {
      f = { data: Buffer.alloc(0), linked: true };
      this.files.set(path, f);
    }
    const fd = this.nextFd++;
    this.fds.set(fd, f);
    return fd;
  }
  write(fd: number, data: Uint8Array, offset: number, length: number): number {
    this.calls++;
    if (this.fail.write) throw errno(this.fail.write);
    const f = this.fds.get(fd);
    if (!f) throw errno("EBADF");
    const free = this.capacity - this.used();
    if (free <= 0) throw errno("ENOSPC");
    // Like write(2) on a nearly full filesystem: as much as fits, then ENOSPC on the next call.
    const n = Math.min(length, free);
    f.data = Buffer.concat([f.data, data.subarray(offset, offset + n)]);
    return n;
  }
  size(fd: number): number {
    return this.fds.get(fd)!.data.length;
  }
  truncate(fd: number, length: number): void {
    if (this.fail.truncate) throw errno(this.fail.truncate);
    const f = this.fds.get(fd)!;
    f.data = f.data.subarray(0, length);
  }
  linked(fd: number): boolean {
    return this.fds.get(fd)!.linked;
  }
  close(fd: number): void {
    this.fds.delete(fd);
  }
  /** logrotate: rename the file away (open fds keep writing to it). */
  rotate(path: string): FakeFile {
    const f = this.files.get(path)!;
    this.files.delete(path);
    this.files.set(`${path}.1`, f);
    return f;
  }
  removeDir(): void {
    this.dirGone = true;
    for (const f of this.files.values()) f.linked = false;
    this.files.clear();
  }
  text(f: FakeFile | undefined): string {
    return f ? f.data.toString() : "";
  }
  lines(path = PATH): Record<string, unknown>[] {
    return parseAll(this.text(this.files.get(path)));
  }
}

/** Every line must be one whole JSON object, and the text must end with a newline. */
function parseAll(text: string): Record<string, unknown>[] {
  if (text === "") return [];
  assert.ok(text.endsWith("\n"), `the journal ends inside a line: ${JSON.stringify(text.slice(-60))}`);
  return text
    .slice(0, -1)
    .split("\n")
    .map((l) => JSON.parse(l));
}

function setup(opts: JournalOptions = {}, path: string | undefined = PATH) {
  const fs = new FakeFs();
  const clock = { now: Date.UTC(2026, 0, 1) };
  const notices: string[] = [];
  const journal = new Journal(path, {
    writer: fs,
    clock: () => clock.now,
    notify: (l) => notices.push(l),
    tickMs: 0,
    retryMs: 1000,
    noticeMs: 60_000,
    windowMs: 10_000,
    ...opts,
  });
  return { fs, clock, notices, journal };
}

/** Just enough of a Mapping for the journal's lines. */
function fakeMapping(sessionId: string, device = "sim0") {
  return {
    deviceFile: { sessionId, id: 1n, device: { id: device } },
    region: { name: "BAR2" },
    cookie: 0n,
    regionOffset: 0n,
    length: 4096n,
    requestedAttribute: "WC",
    effectiveAttribute: "WC",
    prot: "rw",
    backing: { kind: "memfd" },
    rule: "r",
    refs: 1,
  };
}

/** Just enough of a Broker to emit events at the journal. */
function fakeBroker(): Broker {
  return Object.assign(new EventEmitter(), {
    policy: { digest: "d1g35t", source: "/etc/vfio-broker/policy.yaml" },
    allDevices: () => [{ info: { id: "sim0", backend: "sim" } }],
    addRecorder: () => {},
  }) as unknown as Broker;
}

const dropped = (j: Journal, reason: string) => j.stats.dropped.get(reason) ?? 0;

describe("degrading, never throwing", () => {
  test("ENOSPC: lines that do not fit are dropped and counted; the file keeps only whole lines", () => {
    const { fs, journal } = setup();
    fs.capacity = 300;
    for (let i = 0; i < 20; i++) journal.write("mapping.create", { i, pad: "x".repeat(40) });
    const lines = fs.lines();
    assert.ok(lines.length > 0 && lines.length < 20);
    // The line that crossed the limit was written in part and taken back: no fragment remains.
    assert.deepEqual(
      lines.map((l) => l.i),
      [...Array(lines.length).keys()],
    );
    assert.equal(journal.stats.linesWritten, lines.length);
    assert.equal(dropped(journal, "ENOSPC"), 20 - lines.length);
    assert.equal(journal.stats.writable, false);
  });

  test("while failing, nothing is tried before the retry time; then one attempt", () => {
    const { fs, clock, journal } = setup();
    fs.fail.write = "EIO";
    journal.write("a", {});
    const calls = fs.calls;
    for (let i = 0; i < 1000; i++) journal.write("a", {});
    assert.equal(fs.calls, calls, "no syscall per dropped line while waiting");
    assert.equal(dropped(journal, "EIO"), 1001);
    clock.now += 1000;
    journal.write("a", {});
    assert.ok(fs.calls > calls);
  });

  test("stderr hears once per interval, with the count dropped since", () => {
    const { fs, clock, notices, journal } = setup();
    fs.capacity = 0;
    for (let i = 0; i < 500; i++) {
      journal.write("a", {});
      clock.now += 10; // 5 s of drops
    }
    assert.equal(notices.length, 1);
    assert.match(notices[0]!, /dropped 1 line\(s\) \(ENOSPC 1\); ENOSPC: simulated; retrying every 1 s/);
    clock.now += 60_000;
    journal.tick();
    assert.equal(notices.length, 2);
    assert.match(notices[1]!, /dropped 499 line\(s\) in the last 65 s \(ENOSPC 499\)/);
    journal.tick();
    assert.equal(notices.length, 2, "nothing new, nothing said");
  });

  test("recovery: space again -> the next write lands, after a journal.gap line that counts the loss", () => {
    const { fs, clock, notices, journal } = setup();
    journal.write("first", {});
    fs.capacity = fs.used();
    for (let i = 0; i < 7; i++) journal.write("lost", { i });
    fs.capacity = Number.POSITIVE_INFINITY;
    clock.now += 1000;
    journal.write("after", {});
    const events = fs.lines().map((l) => l.event);
    assert.deepEqual(events, ["first", "journal.gap", "after"]);
    const gap = fs.lines()[1]!;
    assert.equal(gap.dropped, 7);
    assert.deepEqual(gap.reasons, { ENOSPC: 7 });
    assert.equal(journal.stats.writable, true);
    clock.now += 60_000;
    journal.tick();
    assert.match(notices.at(-1)!, /dropped 6 line\(s\).*; writing again/);
  });

  test("recovery without new events: tick() writes the gap line once the retry time has come", () => {
    const { fs, clock, journal } = setup();
    fs.fail.write = "ENOSPC";
    journal.write("lost", {});
    delete fs.fail.write;
    journal.tick();
    assert.deepEqual(fs.lines(), [], "not before the retry time");
    clock.now += 1000;
    journal.tick();
    assert.deepEqual(
      fs.lines().map((l) => [l.event, l.dropped]),
      [["journal.gap", 1]],
    );
  });

  test("a short write whose rest fails and whose truncate fails leaves a fragment that the next line ends", () => {
    const { fs, clock, journal } = setup();
    journal.write("a", {});
    fs.capacity = fs.used() + 10;
    fs.fail.truncate = "EIO";
    journal.write("b", { pad: "y".repeat(50) });
    fs.capacity = Number.POSITIVE_INFINITY;
    clock.now += 1000;
    journal.write("c", {});
    const text = fs.text(fs.files.get(PATH));
    const lines = text.split("\n");
    assert.equal(lines.length, 5, text); // a, fragment, gap, c, ""
    assert.equal(JSON.parse(lines[0]!).event, "a");
    assert.throws(() => JSON.parse(lines[1]!), "the fragment is alone on its line");
    assert.equal(JSON.parse(lines[2]!).event, "journal.gap");
    assert.equal(JSON.parse(lines[3]!).event, "c");
  });

  test("never throws: a writer throwing non-errno errors, an event that cannot be serialised", () => {
    const { fs, clock, journal } = setup();
    fs.write = () => {
      throw new TypeError("boom");
    };
    journal.write("a", {});
    clock.now += 1000;
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    journal.write("b", { cyclic });
    assert.equal(dropped(journal, "other"), 1);
    assert.equal(dropped(journal, "format"), 1);
  });

  test("a journal that cannot be opened at start degrades too, and opens once it can", () => {
    const fs = new FakeFs();
    fs.fail.open = "EACCES";
    const clock = { now: 0 };
    const notices: string[] = [];
    const journal = new Journal(PATH, {
      writer: fs,
      clock: () => clock.now,
      notify: (l) => notices.push(l),
      tickMs: 0,
    });
    journal.write("a", {});
    assert.equal(dropped(journal, "EACCES"), 1);
    assert.match(notices[0]!, /cannot open .*EACCES.*lines are dropped and counted/);
    delete fs.fail.open;
    clock.now += 1000;
    journal.write("b", {});
    assert.deepEqual(
      fs.lines().map((l) => l.event),
      ["journal.gap", "b"],
    );
  });

  test("stderr mode: fd 2, never opened or closed; a torn line is ended before the next one", () => {
    const writes: string[] = [];
    let call = 0;
    const writer: JournalWriter = {
      open: () => assert.fail("stderr is never opened"),
      write: (fd, data, offset, length) => {
        assert.equal(fd, 2);
        // A pipe that takes 5 bytes, then is full (EAGAIN), then drains.
        if (call++ === 0) {
          writes.push(Buffer.from(data.subarray(offset, offset + 5)).toString());
          return 5;
        }
        if (call === 2) throw errno("EAGAIN");
        writes.push(Buffer.from(data.subarray(offset, offset + length)).toString());
        return length;
      },
      size: () => assert.fail("stderr is never truncated"),
      truncate: () => assert.fail("stderr is never truncated"),
      linked: () => true,
      close: () => assert.fail("stderr is never closed"),
    };
    let now = 0;
    const journal = new Journal(undefined, { writer, clock: () => now, notify: () => {}, tickMs: 0 });
    journal.write("a", {});
    now += 1000;
    journal.write("b", {});
    journal.close("test");
    assert.equal(dropped(journal, "EAGAIN"), 1);
    const text = writes.join("");
    const lines = text.split("\n");
    assert.equal(lines[0]!.length, 5, "the fragment");
    assert.deepEqual(
      lines.slice(1, -1).map((l) => JSON.parse(l).event),
      ["journal.gap", "b", "daemon.stop"],
    );
  });
});

describe("reopen (SIGHUP)", () => {
  test("logrotate: the file is renamed, SIGHUP opens a new one; old lines stay in the rotated file", () => {
    const { fs, journal } = setup();
    journal.write("before", {});
    const rotated = fs.rotate(PATH);
    journal.reopen();
    journal.write("after", {});
    assert.deepEqual(
      parseAll(fs.text(rotated)).map((l) => l.event),
      ["before"],
    );
    assert.deepEqual(
      fs.lines().map((l) => l.event),
      ["after"],
    );
    assert.equal(fs.fds.size, 1, "the old fd was closed");
  });

  test("EMFILE: the old fd is kept and still written; the reopen is retried until it works", () => {
    const { fs, clock, notices, journal } = setup();
    journal.write("before", {});
    const rotated = fs.rotate(PATH);
    fs.fail.open = "EMFILE";
    journal.reopen();
    journal.write("during", {});
    assert.equal(journal.stats.reopenFailures.get("EMFILE"), 1);
    assert.equal(journal.stats.dropped.size, 0, "nothing lost");
    assert.match(notices[0]!, /cannot reopen .*EMFILE.*still writing to the file opened before/);
    assert.deepEqual(
      parseAll(fs.text(rotated)).map((l) => l.event),
      ["before", "during"],
    );
    clock.now += 1000;
    journal.tick();
    assert.equal(journal.stats.reopenFailures.get("EMFILE"), 2);
    delete fs.fail.open;
    clock.now += 1000;
    journal.tick();
    journal.write("later", {});
    assert.deepEqual(
      fs.lines().map((l) => l.event),
      ["later"],
    );
    assert.equal(notices.length, 1, "one notice per interval");
  });

  test("the directory removed, then SIGHUP: the unlinked fd is closed, lines are dropped as ENOENT, and writing resumes when it is back", () => {
    const { fs, journal } = setup();
    journal.write("before", {});
    fs.removeDir();
    journal.reopen();
    assert.equal(fs.fds.size, 0, "writing into a deleted file would lose lines silently");
    for (let i = 0; i < 5; i++) journal.write("lost", {});
    assert.equal(dropped(journal, "ENOENT"), 5);
    assert.equal(journal.stats.writable, false);
    fs.dirGone = false;
    journal.reopen();
    journal.write("back", {});
    assert.deepEqual(
      fs.lines().map((l) => [l.event, l.dropped]),
      [
        ["journal.gap", 5],
        ["back", undefined],
      ],
    );
  });

  test("the file deleted without a SIGHUP: tick() notices and opens a new one", () => {
    const { fs, journal } = setup();
    journal.write("before", {});
    fs.files.get(PATH)!.linked = false;
    fs.files.delete(PATH);
    journal.tick();
    journal.write("after", {});
    assert.deepEqual(
      fs.lines().map((l) => l.event),
      ["after"],
    );
  });

  test("EIO on write: the fd is suspect, so the retry reopens the file", () => {
    const { fs, clock, journal } = setup();
    journal.write("a", {});
    fs.fail.write = "EIO";
    journal.write("lost", {});
    delete fs.fail.write;
    const opens = fs.fds.size;
    clock.now += 1000;
    journal.write("b", {});
    assert.equal(fs.fds.size, opens, "old fd closed, new one open");
    assert.deepEqual(
      fs.lines().map((l) => l.event),
      ["a", "journal.gap", "b"],
    );
  });
});

describe("aggregation per identity", () => {
  const peer = (uid: number, pid = 4242) => ({ uid, pid });

  test("an unknown-ticket flood: the first in full, then one summary per window with the count", () => {
    const { fs, clock, journal } = setup();
    const broker = fakeBroker();
    journal.attach(broker);
    for (let i = 0; i < 10_000; i++)
      broker.emit("fd.delivery", "unknown", undefined, 0.01, peer(65534, 100 + i));
    broker.emit("fd.delivery", "unknown", undefined, 0.01, peer(1000));
    assert.deepEqual(
      fs.lines().map((l) => [l.event, l.uid, l.result]),
      [
        ["fd.delivery", 65534, "unknown"],
        ["fd.delivery", 1000, "unknown"],
      ],
    );
    clock.now += 10_000;
    journal.tick();
    const summaries = fs.lines().filter((l) => l.event === "fd.delivery.suppressed");
    assert.deepEqual(summaries, [
      {
        ts: new Date(clock.now).toISOString(),
        event: "fd.delivery.suppressed",
        uid: 65534,
        result: "unknown",
        count: 9999,
        since: new Date(clock.now - 10_000).toISOString(),
        windowMs: 10_000,
        lastPid: 10099,
      },
    ]);
    assert.equal(journal.stats.suppressed.get("fd.delivery"), 9999);
    assert.equal(journal.stats.aggregationKeys, 0, "closed windows are forgotten");
  });

  test("the flood goes on: each window gets one full line and one summary", () => {
    const { fs, clock, journal } = setup();
    const broker = fakeBroker();
    journal.attach(broker);
    for (let w = 0; w < 3; w++) {
      for (let i = 0; i < 100; i++) {
        broker.emit("fd.delivery", "wrong_peer", undefined, 0, peer(65534));
        clock.now += 100; // the window is 10 s: 100 events per window
      }
    }
    journal.tick();
    assert.deepEqual(
      fs.lines().map((l) => [l.event, l.count]),
      [
        ["fd.delivery", undefined],
        ["fd.delivery.suppressed", 99],
        ["fd.delivery", undefined],
        ["fd.delivery.suppressed", 99],
        ["fd.delivery", undefined],
        ["fd.delivery.suppressed", 99],
      ],
    );
  });

  test("delivered fds within the identity's budget are each written in full", () => {
    const { fs, journal } = setup();
    const broker = fakeBroker();
    journal.attach(broker);
    for (let i = 0; i < 5; i++) broker.emit("fd.delivery", "ok", undefined, 0.1, peer(1000));
    assert.equal(fs.lines().length, 5);
  });

  test("grant/release churn past the budget: counted per uid and event, summaries every second, counts add up", () => {
    const { fs, clock, journal } = setup({ churnBudget: 8, churnReportMs: 1000 });
    const broker = Object.assign(fakeBroker(), {
      sessions: new Map([
        ["s-attacker", { identity: { uid: 65534, pid: 9 } }],
        ["s-victim", { identity: { uid: 1000, pid: 10 } }],
      ]),
    }) as unknown as Broker;
    journal.attach(broker);
    const m = fakeMapping("s-attacker");
    const victim = fakeMapping("s-victim", "sim1");
    let grants = 0;
    let releases = 0;
    for (let t = 0; t < 25_000; t += 5) {
      clock.now += 5;
      broker.emit("mapping.grant", m as never, 0.1, peer(65534));
      broker.emit("mapping.release", m as never, "client");
      grants++;
      releases++;
      if (t % 2000 === 0) broker.emit("mapping.grant", victim as never, 0.1, peer(1000));
      if (t % 1000 === 0) journal.tick();
    }
    clock.now += 10_000;
    journal.close("SIGTERM");
    const lines = fs.lines();
    const count = (event: string, uid: number) =>
      lines.filter((l) => l.event === event && l.session === (uid === 1000 ? "s-victim" : "s-attacker"))
        .length +
      lines
        .filter((l) => l.event === `${event}.suppressed` && l.uid === uid)
        .reduce((a, l) => a + (l.count as number), 0);
    assert.equal(count("mapping.grant", 65534), grants, "grants: full lines + summary counts");
    assert.equal(count("mapping.release", 65534), releases, "releases: full lines + summary counts");
    // The victim's few grants are all written in full, however much the attacker churns.
    assert.equal(lines.filter((l) => l.event === "mapping.grant" && l.uid === 1000).length, 13);
    // 8 full lines per 10 s window (3 windows), a summary per second while it lasts.
    const full = lines.filter((l) => l.event === "mapping.grant" && l.uid === 65534).length;
    assert.equal(full, 24);
    const summaries = lines.filter((l) => l.event === "mapping.grant.suppressed");
    assert.ok(summaries.length >= 20 && summaries.length <= 30, `${summaries.length} summaries`);
    assert.deepEqual(Object.keys(summaries[0]!.details as object), ["sim0 BAR2 WC memfd"]);
    const rel = lines.find((l) => l.event === "mapping.release.suppressed")!;
    assert.deepEqual(Object.keys(rel.details as object), ["sim0 BAR2 WC memfd client"]);
  });

  test("characters a line-splitting reader or a viewer would misread are escaped; the JSON value is the same", () => {
    const { fs, journal } = setup();
    const name = "a\u2028b\u2029c\u0085d\u202egnp.exe\u2066\u200b\ufeff\u009b";
    journal.write("session.open", { clientName: name, ok: "é €" });
    const text = fs.text(fs.files.get(PATH));
    assert.equal(text.split(/\r\n|[\n\r\u0085\u2028\u2029]/).length, 2, "one line, then the end");
    assert.doesNotMatch(text, /[\u0080-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200b\ufeff]/);
    assert.equal(fs.lines()[0]!.clientName, name);
    assert.equal(fs.lines()[0]!.ok, "é €");
  });

  test("the whole class is escaped, not a list: tag characters (past U+FFFF), deprecated format characters, DEL", () => {
    const { fs, journal } = setup();
    // A cgroup name a user chose: "ok" followed by text hidden in tag characters, U+206A, DEL.
    const cgroup = "/user.slice/ok\u{e0041}\u{e0042}\u206a\u007f.scope";
    journal.write("session.open", { cgroup });
    const text = fs.text(fs.files.get(PATH));
    assert.doesNotMatch(text, /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}](?!$)/u, "nothing invisible but the line end");
    assert.match(text, /\\udb40\\udc41\\udb40\\udc42\\u206a\\u007f/, "a surrogate pair as two escapes");
    assert.equal(fs.lines()[0]!.cgroup, cgroup, "the same JSON value");
  });

  test("connection.refused and denied are aggregated per uid and reason", () => {
    const { fs, clock, journal } = setup();
    const broker = fakeBroker();
    journal.attach(broker);
    const session = { id: "s1", identity: { uid: 65534, pid: 7 } };
    for (let i = 0; i < 50; i++) {
      broker.emit("connection.refused", "broker", peer(65534), "limit:sessions");
      broker.emit("connection.refused", "fd", peer(65534), "limit:connections");
      broker.emit("denied", session as never, "no_rule", "no rule admits uid 65534");
    }
    assert.equal(fs.lines().length, 3);
    clock.now += 10_000;
    journal.close("SIGTERM");
    const s = fs.lines().filter((l) => String(l.event).endsWith(".suppressed"));
    assert.deepEqual(
      s.map((l) => [l.event, l.socket, l.reason, l.count]),
      [
        ["connection.refused.suppressed", "broker", "limit:sessions", 49],
        ["connection.refused.suppressed", "fd", "limit:connections", 49],
        ["denied.suppressed", undefined, "no_rule", 49],
      ],
    );
  });

  test("the key table is bounded: many uids overflow into one 'other' bucket", () => {
    const { fs, clock, journal } = setup({ maxKeys: 4 });
    const broker = fakeBroker();
    journal.attach(broker);
    for (let uid = 100_000; uid < 110_000; uid++)
      broker.emit("fd.delivery", "unknown", undefined, 0, peer(uid));
    assert.equal(journal.stats.aggregationKeys, 4);
    assert.equal(fs.lines().length, 4, "only the tracked keys get a full line");
    clock.now += 10_000;
    journal.tick();
    const other = fs.lines().find((l) => l.event === "suppressed.other")!;
    assert.equal(other.count, 9996);
    assert.deepEqual(other.events, { "fd.delivery": 9996 });
    assert.equal(journal.stats.suppressed.get("other"), 9996);
  });

  test("a journal handler never throws into the emitter, even when every write fails", () => {
    const { fs, journal } = setup();
    fs.fail.write = "ENOSPC";
    const broker = fakeBroker();
    journal.attach(broker);
    assert.doesNotThrow(() => {
      broker.emit("fd.delivery", "unknown", undefined, 0, peer(65534));
      broker.emit("policy.reload", true, []);
      const malformed = Object.defineProperty({}, "id", {
        get() {
          throw new Error("a broken event");
        },
      });
      broker.emit("session.open", malformed as never);
    });
    assert.ok(dropped(journal, "ENOSPC") >= 2);
    assert.equal(dropped(journal, "format"), 1);
  });
});

describe("daemon start and stop", () => {
  test("daemon.start names version, pid, policy digest and devices; daemon.stop the reason, after the pending summaries", () => {
    const { fs, journal } = setup();
    const broker = fakeBroker();
    journal.attach(broker);
    journal.started(broker);
    broker.emit("fd.delivery", "expired", undefined, 0, { uid: 1, pid: 2 });
    broker.emit("fd.delivery", "expired", undefined, 0, { uid: 1, pid: 3 });
    journal.close("SIGTERM");
    const lines = fs.lines();
    assert.deepEqual(
      lines.map((l) => l.event),
      ["daemon.start", "fd.delivery", "fd.delivery.suppressed", "daemon.stop"],
    );
    const start = lines[0]!;
    assert.equal(start.pid, process.pid);
    assert.match(String(start.version), /^\d+\.\d+\.\d+/);
    assert.equal(start.digest, "d1g35t");
    assert.deepEqual(start.devices, [{ id: "sim0", backend: "sim" }]);
    assert.equal(lines[3]!.reason, "SIGTERM");
    assert.equal(fs.fds.size, 0, "closed");
    broker.emit("fd.delivery", "ok", undefined, 0, { uid: 1, pid: 2 });
    assert.equal(fs.lines().length, 4, "nothing after daemon.stop");
  });
});

describe("container identity", () => {
  test("session.open names the container id, runtime, pod UID and QoS class read from a trusted cgroup only", () => {
    const { fs, journal } = setup();
    const broker = fakeBroker();
    journal.attach(broker);
    const id = "4f3c2b1a".repeat(8);
    const pod = "0c4f2a9e-1111-2222-3333-444455556666";
    const identity = (cgroup: string, cgroupTrusted = true) => ({
      uid: 1000,
      gid: 1000,
      pid: 42,
      cgroup,
      cgroupTrusted,
      pidfd: 7,
      pidfdSource: "SO_PEERPIDFD",
      groups: [],
    });
    broker.emit("session.open", {
      id: "s1",
      identity: identity(
        `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${pod.replaceAll("-", "_")}.slice/cri-containerd-${id}.scope`,
      ),
    } as never);
    broker.emit("session.open", {
      id: "s2",
      identity: identity("/user.slice/user-1000.slice/session-1.scope"),
    } as never);
    // The same path where a user could have named it (identity/cgroup-trust.ts): no container, no pod.
    broker.emit("session.open", {
      id: "s3",
      identity: identity(`/system.slice/docker-${id}.scope`, false),
    } as never);
    const [k8s, host, forged] = fs.lines().filter((l) => l.event === "session.open");
    assert.equal(k8s!.session, "s1");
    assert.equal(k8s!.containerId, id);
    assert.equal(k8s!.containerRuntime, "containerd");
    assert.equal(k8s!.podUid, pod);
    assert.equal(k8s!.qosClass, "burstable");
    assert.equal(k8s!.pidfd, undefined);
    assert.equal(host!.session, "s2");
    assert.equal(host!.containerId, undefined);
    assert.equal(host!.podUid, undefined);
    assert.equal(forged!.cgroup, `/system.slice/docker-${id}.scope`);
    assert.equal(forged!.cgroupTrusted, false);
    assert.equal(forged!.containerId, undefined);
    assert.equal(forged!.containerRuntime, undefined);
  });
});

describe("batches", () => {
  it("lines held for a batch go in one write; if it fails, each is dropped and counted", () => {
    const { fs, journal } = setup();
    let recorder: Recorder | undefined;
    const broker = Object.assign(fakeBroker(), {
      addRecorder: (r: Recorder) => {
        recorder = r;
      },
    });
    journal.attach(broker);
    const writes = () => fs.calls;
    recorder!.cork();
    const before = writes();
    for (let i = 0; i < 3; i++) journal.write("mapping.grant", { cookie: i });
    assert.equal(writes(), before, "a held line was written");
    recorder!.uncork();
    assert.equal(writes(), before + 1, "three held lines took more than one write");
    assert.deepEqual(
      fs
        .lines()
        .filter((l) => l.event === "mapping.grant")
        .map((l) => l.cookie),
      [0, 1, 2],
    );
    assert.equal(journal.stats.linesWritten, fs.lines().length);
    // The disk is full: the whole batch is dropped, every line counted.
    fs.capacity = fs.used();
    recorder!.cork();
    for (let i = 0; i < 3; i++) journal.write("mapping.grant", { cookie: 10 + i });
    recorder!.uncork();
    assert.equal(journal.stats.dropped.get("ENOSPC"), 3);
    assert.equal(fs.lines().filter((l) => l.cookie === 10).length, 0);
  });
});
