// fdrecv_fuzz.c: libFuzzer target for the addon's receive path, src/fdmsg.c, compiled from the same
// source the addon links. Each input is a little script played by a hostile peer on a real
// socketpair: sendmsg calls with fuzz bytes and 0..253 fds (dups of /dev/null, a pipe, even the
// receiving socket itself), optional EOF or close, and a receiver that runs fdrecv() with fuzz-chosen
// buffer sizes and fd limits, sometimes under a lowered RLIMIT_NOFILE so the kernel truncates the
// control data (EMFILE -> MSG_CTRUNC). After every input the process must hold exactly the fds it
// held before, every fd handed out must be close-on-exec, and no limit may be exceeded; anything
// else aborts, which libFuzzer records as a crash with the input. Inputs whose first byte is odd
// instead feed raw bytes to fdmsg_each_right() as forged control data (cmsg headers that lie
// about their length), which ASan checks for out-of-bounds reads.
//
// Input (socket mode): flags, maxfds selector, buffer-size selector, rlimit headroom, then ops.
//   flags  bit1: shutdown(SHUT_WR) the sender at the end   bit2: receive under a lowered RLIMIT_NOFILE
//          bit3: close the sender at the end (data and fds still in flight)
//   op     bits0-2: fd count (table below)   bit3: receiver drains after this op
//          bit4: the fds include the sockets and a pipe, not only /dev/null
//          bits5-7: length shift; the next byte is the length, shifted left by this; the payload is
//          the next bytes of the input (repeated if the input runs out)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fdmsg.h"

#define MAX_OPS 64
#define MAX_PAYLOAD (255u << 7)
#define MAX_RECVS 4096           // per drain
#define MAX_RECVS_PER_INPUT 20000 // keeps one input well under libFuzzer's -timeout with 1-byte reads

static const size_t MAXFDS_TABLE[8] = {0, 1, 2, 3, 4, 7, 8, MAX_FDS_PER_MESSAGE};
static const unsigned NFDS_TABLE[8] = {0, 0, 1, 2, 3, 9, 64, MAX_FDS_PER_MESSAGE + 1};

static int devnull = -1;
static struct rlimit base_limit;
static unsigned char payload[MAX_PAYLOAD];
static unsigned char rbuf[64 * 1024 + 4];

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "fdrecv_fuzz: check failed: " #cond ": " __VA_ARGS__); \
      fputc('\n', stderr);                                 \
      abort();                                             \
    }                                                      \
  } while (0)

// Open fds of this process and the highest of them (the scan's own dir fd excluded).
static int count_fds(int* highest) {
  DIR* d = opendir("/proc/self/fd");
  CHECK(d != NULL, "opendir /proc/self/fd: %s", strerror(errno));
  int n = 0, hi = -1, self = dirfd(d);
  for (struct dirent* e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.') continue;
    int fd = atoi(e->d_name);
    if (fd == self) continue;
    n++;
    if (fd > hi) hi = fd;
  }
  closedir(d);
  if (highest) *highest = hi;
  return n;
}

typedef struct {
  const uint8_t* p;
  size_t left;
} input;

static uint8_t take(input* in) {
  if (in->left == 0) return 0;
  in->left--;
  return *in->p++;
}

typedef struct {
  int rx, tx;         // receiver and sender ends
  int pipe_r, pipe_w; // extra fd kinds to pass
  size_t maxfds, rlen;
  bool lower_limit;
  rlim_t limited;     // RLIMIT_NOFILE soft limit while receiving, if lower_limit
  bool eof;
  int recvs_left;
} session;

// One fdrecv() call with the invariants every caller relies on; returns false when nothing more
// can be read now (EAGAIN, EOF, error).
static bool receive_once(session* s) {
  int fds[MAX_FDS_PER_MESSAGE];
  if (s->lower_limit) {
    struct rlimit l = {.rlim_cur = s->limited, .rlim_max = base_limit.rlim_max};
    setrlimit(RLIMIT_NOFILE, &l);
  }
  fdrecv_result r = fdrecv(s->rx, rbuf, s->rlen, s->maxfds, fds);
  if (s->lower_limit) setrlimit(RLIMIT_NOFILE, &base_limit);
  switch (r.status) {
    case FDRECV_AGAIN:
      return false;
    case FDRECV_ERRNO:
      CHECK(r.err == ECONNRESET, "unexpected recvmsg errno %d (%s)", r.err, strerror(r.err));
      return false;
    case FDRECV_TOO_MANY:
    case FDRECV_TRUNCATED:
      CHECK(r.nfds <= MAX_FDS_PER_MESSAGE + 1, "closed %zu fds", r.nfds);
      return true;
    case FDRECV_OK:
      break;
  }
  CHECK(r.n >= 0 && (size_t)r.n <= s->rlen, "read %zd bytes into %zu", r.n, s->rlen);
  CHECK(r.nfds <= s->maxfds, "delivered %zu fds with maxfds %zu", r.nfds, s->maxfds);
  for (size_t i = 0; i < r.nfds; i++) {
    int fl = fcntl(fds[i], F_GETFD);
    CHECK(fl >= 0, "delivered fd %d is not open", fds[i]);
    CHECK(fl & FD_CLOEXEC, "delivered fd %d lacks FD_CLOEXEC (MSG_CMSG_CLOEXEC missing?)", fds[i]);
    close(fds[i]);
  }
  if (r.n == 0) {
    CHECK(r.nfds == 0, "EOF came with %zu fds", r.nfds);
    s->eof = true;
    return false;
  }
  return true;
}

static void drain(session* s) {
  for (int i = 0; i < MAX_RECVS && s->recvs_left > 0 && !s->eof; i++) {
    s->recvs_left--;
    if (!receive_once(s)) break;
  }
}

// One sendmsg of the op's payload with its fds; a full socket buffer makes the receiver drain.
static void send_op(session* s, input* in) {
  uint8_t op = take(in);
  unsigned nfds = NFDS_TABLE[op & 7];
  bool mixed = op & 0x10;
  size_t len = (size_t)take(in) << (op >> 5);
  for (size_t i = 0; i < len; i++) payload[i] = in->left ? take(in) : (uint8_t)i;
  int fds[MAX_FDS_PER_MESSAGE + 1];
  unsigned made = 0;
  for (; made < nfds; made++) {
    int src = devnull;
    if (mixed) src = (int[]){devnull, s->rx, s->tx, s->pipe_r, s->pipe_w}[made % 5];
    fds[made] = fcntl(src, F_DUPFD_CLOEXEC, 0);
    if (fds[made] < 0) break;
  }
  // The addon's attach_rights builds up to MAX_FDS_PER_MESSAGE; one fd more goes in a buffer of
  // its own so that the kernel, not our helper, refuses it (EINVAL).
  rights_buffer rights;
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * (MAX_FDS_PER_MESSAGE + 1))];
  } big;
  size_t off = 0;
  for (int tries = 0; tries < 64; tries++) {
    struct iovec iov = {.iov_base = payload + off, .iov_len = len - off};
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (off == 0 && made > MAX_FDS_PER_MESSAGE) {
      memset(&big, 0, sizeof big);
      msg.msg_control = big.buf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * made);
      struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * made);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * made);
    } else if (off == 0) {
      attach_rights(&msg, &rights, fds, made);
    }
    ssize_t r = sendmsg(s->tx, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) off += (size_t)r;
    if (r < 0 && errno != EAGAIN) break;
    if (off >= len) break;
    drain(s);
  }
  for (unsigned i = 0; i < made; i++) close(fds[i]);
  if (op & 0x08) drain(s);
}

static void fuzz_socket_path(input* in, uint8_t flags) {
  session s = {.rx = -1, .tx = -1, .eof = false, .recvs_left = MAX_RECVS_PER_INPUT};
  int sv[2], pv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
        strerror(errno));
  CHECK(pipe2(pv, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2: %s", strerror(errno));
  s.rx = sv[0];
  s.tx = sv[1];
  s.pipe_r = pv[0];
  s.pipe_w = pv[1];
  uint8_t m = take(in);
  s.maxfds = (m & 0x80) ? (size_t)(m & 0x7f) * 2 : MAXFDS_TABLE[m & 7];
  if (s.maxfds > MAX_FDS_PER_MESSAGE) s.maxfds = MAX_FDS_PER_MESSAGE;
  uint8_t b = take(in);
  s.rlen = b == 0 ? sizeof rbuf : 1 + (size_t)b * b;
  uint8_t headroom = take(in) & 15;
  s.lower_limit = flags & 0x04;
  if (s.lower_limit) {
    int hi;
    count_fds(&hi);
    s.limited = (rlim_t)hi + 1 + headroom;
  }
  for (int i = 0; i < MAX_OPS && in->left > 0; i++) send_op(&s, in);
  if (flags & 0x08) {
    close(s.tx);
    s.tx = -1;
  } else if (flags & 0x02) {
    shutdown(s.tx, SHUT_WR);
  }
  drain(&s);
  close(s.rx);
  if (s.tx >= 0) close(s.tx);
  close(s.pipe_r);
  close(s.pipe_w);
}

static void count_sink(void* ctx, int fd) {
  (void)fd;
  (*(size_t*)ctx)++;
}

// Forged control data: the walk must stay inside msg_controllen whatever the headers claim. The
// buffer is heap-allocated at its exact size so ASan sees the first byte past it.
static void fuzz_control_walk(input* in) {
  size_t len = in->left;
  unsigned char* buf = malloc(len ? len : 1);
  CHECK(buf != NULL, "malloc %zu", len);
  memcpy(buf, in->p, len);
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_control = buf;
  msg.msg_controllen = len;
  size_t n = 0;
  fdmsg_each_right(&msg, count_sink, &n);
  CHECK(n <= len / sizeof(int), "%zu fds in %zu bytes of control data", n, len);
  free(buf);
}

int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)argc;
  (void)argv;
  devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  getrlimit(RLIMIT_NOFILE, &base_limit);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  input in = {.p = data + 1, .left = size - 1};
  if (data[0] & 1) {
    fuzz_control_walk(&in);
    return 0;
  }
  int before = count_fds(NULL);
  fuzz_socket_path(&in, data[0]);
  int after = count_fds(NULL);
  CHECK(after == before, "fd leak: %d fds open before the input, %d after", before, after);
  return 0;
}
