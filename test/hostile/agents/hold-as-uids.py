#!/usr/bin/env python3
# Attacker agent, run as root, playing COUNT uids from FIRST on: each uid keeps PER - 1
# connections open on broker.sock (its sessions; tenant-pending.js holds its last one) and PER on
# fd.sock (its fd-channel connections), as that uid. One single-threaded process plays them all:
# it connects each socket with its effective uid set to that uid (the kernel records the
# effective uid at connect(2) for SO_PEERCRED), one syscall here, where in a multi-threaded Node
# process glibc stops every thread for each seteuid (milliseconds each on a loaded machine).
# Each uid opens its connections one after another, as fast as brokerd answers (the gRPC
# server's first frame, or an fd-channel reply to a bogus ticket, or the close), and opens again
# whatever brokerd closes a second later: it takes all brokerd gives. At most MAX_INFLIGHT connects of the
# process wait for brokerd's answer at once, taken in turns by the uids: flooding the accept queue
# is another attack (quotas.test.ts), one the kernel's first-come queue decides, not the caps.
# Until SIGTERM; prints {"phase":"filled"} once every uid holds its PER or was refused on both
# sockets (it has all brokerd gives; at the latest after FILL seconds), then {uids, attempts,
# closed, failed, errnos, openAtEnd, rssMB}.
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import time

broker_sock, fd_sock = sys.argv[1], sys.argv[2]
first, count, per = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
RETRY = 0.25  # after EAGAIN (the accept queue is full)
AGAIN = 1.0  # after brokerd closed one of the uid's connections on that socket (refused, or idle)
FILL = 30.0
MAX_INFLIGHT = 32
# FdRequest{ticket: 32 x "0"}: admitted, brokerd answers UNKNOWN_TICKET; refused, BUSY (or closes).
TICKET = b"\x0a\x20" + b"0" * 32
FD_PROBE = struct.pack(">I", len(TICKET)) + TICKET

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

sel = selectors.DefaultSelector()
pools = {"sessions": (broker_sock, per - 1), "fdConnections": (fd_sock, per)}
uids = range(first, first + count)
open_ = {(u, p): 0 for u in uids for p in pools}
inflight = {(u, p): False for u in uids for p in pools}
retry_at = {(u, p): 0.0 for u in uids for p in pools}
attempts = {p: 0 for p in pools}
closed = {p: 0 for p in pools}
failed = {p: 0 for p in pools}
errors = {}
refused = set()  # (uid, pool) that brokerd closed a connection of: it has what brokerd gives
stopping = False
waiting = 0  # connects of this process not answered yet
keys = [(u, p) for u in uids for p in pools]
turn = 0


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)


def open_one(key):
    """Opens the next connection of (uid, pool) if it may: one at a time, up to its PER."""
    uid, p = key
    path, want = pools[p]
    global waiting
    if stopping or inflight[key] or open_[key] >= want or waiting >= MAX_INFLIGHT:
        return
    if time.monotonic() < retry_at[key]:
        return
    attempts[p] += 1
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    os.seteuid(uid)
    try:
        s.connect(path)
    except OSError as e:
        failed[p] += 1
        errors[e.errno] = errors.get(e.errno, 0) + 1
        s.close()
        retry_at[key] = time.monotonic() + RETRY
        return
    finally:
        os.seteuid(0)
    if p == "fdConnections":
        try:
            s.send(FD_PROBE)
        except OSError:
            pass
    open_[key] += 1
    inflight[key] = True
    waiting += 1
    # [which uid and pool, waiting for brokerd's first answer]
    sel.register(s, selectors.EVENT_READ, [key, True])


def open_some():
    """Gives the free connect slots to the uids in turns."""
    global turn
    for i in range(len(keys)):
        if waiting >= MAX_INFLIGHT:
            break
        open_one(keys[(turn + i) % len(keys)])
    turn = (turn + 1) % len(keys)


t0 = time.monotonic()
open_some()
said_filled = False
while not stopping:
    for sk, _ in sel.select(timeout=RETRY):
        s, (key, unanswered) = sk.fileobj, sk.data
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s)
            s.close()
            open_[key] -= 1
            closed[key[1]] += 1
            refused.add(key)
            retry_at[key] = time.monotonic() + AGAIN
        # Answered (or closed): this uid may open its next one.
        if unanswered:
            sk.data[1] = False
            inflight[key] = False
            waiting -= 1
    open_some()
    full = all(k in refused or open_[k] >= pools[k[1]][1] for k in keys) if not said_filled else True
    if not said_filled and (full or time.monotonic() - t0 >= FILL):
        said_filled = True
        print(json.dumps({"phase": "filled"}, separators=(",", ":")), flush=True)

held = {p: sum(n for (u, q), n in open_.items() if q == p) for p in pools}
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(
    json.dumps(
        {
            "uids": count,
            "attempts": attempts,
            "closed": closed,
            "failed": failed,
            "errnos": {os.strerror(k): n for k, n in errors.items()},
            "openAtEnd": held,
            "rssMB": rss,
        }
    ),
    flush=True,
)
